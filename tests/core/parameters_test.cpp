#include "core/parameters.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "memory/resources.h"

namespace memento {
namespace {

std::vector<double> values_of(const TensorView& v) {
  std::vector<double> out(static_cast<size_t>(v.numel()));
  convert(v.raw(), v.dtype(), out.data(), DType::kF64, out.size());
  return out;
}

// ---- layout --------------------------------------------------------------------------------

TEST(ParameterSet, OffsetsAreAlignedAndPacked) {
  ParameterSet ps;
  const ParamRef a = ps.declare("a", Shape{3}, ParamInit::zeros());
  const ParamRef b = ps.declare("b", Shape{17}, ParamInit::ones(), false);
  const ParamRef c = ps.declare("c", Shape{16}, ParamInit::normal(1.0f));
  const ParamRef d = ps.declare("d", Shape{2, 5}, ParamInit::normal(0.5f));
  const ParamRef e = ps.declare("e", Shape{0}, ParamInit::zeros());
  EXPECT_EQ(a.index, 0);
  EXPECT_EQ(d.index, 3);
  EXPECT_EQ(e.index, 4);
  ASSERT_EQ(ps.entries().size(), 5u);
  const std::vector<int64_t> offsets = {0, 16, 48, 64, 80};
  for (size_t i = 0; i < offsets.size(); ++i) {
    EXPECT_EQ(ps.entries()[i].offset, offsets[i]) << ps.entries()[i].name;
    EXPECT_EQ(ps.entries()[i].offset % ParameterSet::kAlignElements, 0);
  }
  EXPECT_EQ(ParameterSet::kAlignElements, 16);
  EXPECT_EQ(ps.padded_numel(), 80);
  EXPECT_EQ(ps.numel(), 3 + 17 + 16 + 10);
  EXPECT_FALSE(ps.allocated());
  EXPECT_EQ(ps.entries()[1].name, "b");
  EXPECT_EQ(ps.entries()[1].shape, (Shape{17}));
  EXPECT_FALSE(ps.entries()[1].weight_decay);
  EXPECT_TRUE(ps.entries()[0].weight_decay);  // the default
  EXPECT_EQ(ps.entries()[2].init.kind, ParamInit::Kind::kNormal);
  EXPECT_EQ(ps.entries()[2].init.std, 1.0f);
  EXPECT_EQ(ps.find("c"), &ps.entries()[2]);
  EXPECT_EQ(ps.find("nope"), nullptr);
  (void)b;
  (void)c;
}

TEST(ParameterSet, ViewsIntoTwoBuffersWithTheSameLayout) {
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    ParameterSet ps;
    const ParamRef a = ps.declare("a", Shape{3}, ParamInit::zeros());
    const ParamRef w = ps.declare("w", Shape{4, 5}, ParamInit::normal(0.02f));
    ps.allocate(dtype);
    ASSERT_TRUE(ps.allocated());
    EXPECT_EQ(ps.dtype(), dtype);
    EXPECT_EQ(ps.device(), Device::cpu());
    EXPECT_EQ(ps.flat_values().shape(), (Shape{48}));
    EXPECT_EQ(ps.flat_grads().shape(), (Shape{48}));
    const size_t es = dtype_size(dtype);
    auto offset_in = [&](const TensorView& view, const TensorView& flat) {
      return (static_cast<char*>(view.raw()) - static_cast<char*>(flat.raw())) /
             static_cast<ptrdiff_t>(es);
    };
    EXPECT_EQ(ps.value(w).shape(), (Shape{4, 5}));
    EXPECT_EQ(ps.grad(w).shape(), (Shape{4, 5}));
    EXPECT_EQ(ps.value(w).dtype(), dtype);
    EXPECT_EQ(offset_in(ps.value(a), ps.flat_values()), 0);
    EXPECT_EQ(offset_in(ps.value(w), ps.flat_values()), 16);
    EXPECT_EQ(offset_in(ps.grad(w), ps.flat_grads()), 16);
    EXPECT_NE(ps.flat_values().raw(), ps.flat_grads().raw());
    // Values and gradients start zeroed, padding included.
    for (double x : values_of(ps.flat_values())) ASSERT_EQ(x, 0.0);
    for (double x : values_of(ps.flat_grads())) ASSERT_EQ(x, 0.0);
  }
}

TEST(ParameterSet, ViewsStartOnCacheLines) {
  // The header promises cache-line aligned views; CPU parameters are f32 or f64 (with 16-element
  // alignment a 2-byte dtype would only get 32 bytes).
  for (DType dtype : {DType::kF32, DType::kF64}) {
    ParameterSet ps;
    std::vector<ParamRef> refs;
    for (int i = 0; i < 6; ++i)
      refs.push_back(ps.declare(detail::concat("p", i), Shape{i * 7 + 1}, ParamInit::zeros()));
    ps.allocate(dtype);
    for (const ParamRef r : refs) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(ps.value(r).raw()) % 64, 0u)
          << dtype_name(dtype) << " parameter " << r.index;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(ps.grad(r).raw()) % 64, 0u)
          << dtype_name(dtype) << " gradient " << r.index;
    }
  }
}

TEST(ParameterSet, ZeroGradsClearsGradientsOnly) {
  ParameterSet ps;
  const ParamRef w = ps.declare("w", Shape{10}, ParamInit::ones());
  ps.allocate(DType::kF32);
  ps.initialize(1);
  float* g = ps.flat_grads().data<float>();
  for (int64_t i = 0; i < ps.padded_numel(); ++i) g[i] = 3.0f;
  ps.zero_grads();
  for (int64_t i = 0; i < ps.padded_numel(); ++i) ASSERT_EQ(g[i], 0.0f) << i;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ps.value(w).data<float>()[i], 1.0f);
}

TEST(ParameterSet, AllocatesFromTheGivenResource) {
  TrackingResource tracking(default_resource(Device::cpu()));
  {
    ParameterSet ps;
    ps.declare("w", Shape{100}, ParamInit::zeros());
    ps.declare("b", Shape{1}, ParamInit::zeros());
    ps.allocate(DType::kF64, Device::cpu(), &tracking);
    EXPECT_EQ(ps.padded_numel(), 112 + 16);
    EXPECT_EQ(tracking.current_bytes(), 2u * 128u * 8u);  // values and gradients
  }
  EXPECT_EQ(tracking.current_bytes(), 0u);
}

TEST(ParameterSet, OnMetaNothingIsAllocatedOrInitialised) {
  TrackingResource tracking(default_resource(Device::meta()));
  ParameterSet ps;
  const ParamRef w = ps.declare("w", Shape{1000, 1000}, ParamInit::normal(0.02f));
  ps.allocate(DType::kF32, Device::meta(), &tracking);
  EXPECT_EQ(tracking.current_bytes(), 2u * 1000000u * 4u);  // counted as a real run would
  ps.initialize(3);
  ps.zero_grads();
  EXPECT_EQ(ps.value(w).raw(), nullptr);
  EXPECT_TRUE(ps.value(w).is_meta());
  EXPECT_EQ(ps.value(w).shape(), (Shape{1000, 1000}));
}

TEST(ParameterSetDeathTest, MisuseIsFatal) {
  EXPECT_DEATH(
      {
        ParameterSet ps;
        ps.declare("w", Shape{2}, ParamInit::zeros());
        ps.declare("w", Shape{3}, ParamInit::zeros());
      },
      "declared twice: w");
  EXPECT_DEATH(
      {
        ParameterSet ps;
        ps.declare("w", Shape{2}, ParamInit::zeros());
        ps.allocate(DType::kF32);
        ps.declare("late", Shape{3}, ParamInit::zeros());
      },
      "late");
  EXPECT_DEATH(
      {
        ParameterSet ps;
        ps.declare("w", Shape{2}, ParamInit::zeros());
        ps.initialize(1);
      },
      "before allocate");
}

// Parameters that follow each other with no padding can be used as one tensor (the MLP's stacked
// gate and up weights); the span must end where a parameter ends.
TEST(ParameterSet, AdjacentParametersFormOneSpan) {
  ParameterSet ps;
  const ParamRef a = ps.declare("a", Shape{4, 8}, ParamInit::normal(1.0f));  // 32: no padding
  const ParamRef b = ps.declare("b", Shape{4, 8}, ParamInit::normal(1.0f));
  const ParamRef c = ps.declare("c", Shape{3}, ParamInit::zeros());  // padded to 16
  const ParamRef d = ps.declare("d", Shape{2}, ParamInit::zeros());
  EXPECT_TRUE(ps.adjacent(a, b));
  EXPECT_TRUE(ps.adjacent(b, c));
  EXPECT_FALSE(ps.adjacent(c, d));
  EXPECT_FALSE(ps.adjacent(b, a));
  ps.allocate(DType::kF32);
  ps.initialize(3);
  const TensorView both = ps.compute_span(a, Shape{8, 8});
  EXPECT_EQ(both.raw(), ps.value(a).raw());
  EXPECT_EQ(std::memcmp(static_cast<const float*>(both.raw()) + 32, ps.value(b).raw(), 32 * 4), 0);
  EXPECT_EQ(ps.grad_span(a, Shape{8, 8}).raw(), ps.grad(a).raw());
  EXPECT_DEATH(ps.compute_span(a, Shape{5, 8}), "does not end at the end of a parameter");
}

// ---- initialisation ------------------------------------------------------------------------

TEST(ParameterSet, InitKinds) {
  ParameterSet ps;
  const ParamRef z = ps.declare("z", Shape{33}, ParamInit::zeros());
  const ParamRef o = ps.declare("o", Shape{3, 11}, ParamInit::ones());
  const ParamRef n = ps.declare("n", Shape{200, 100}, ParamInit::normal(0.02f));
  const ParamRef n3 = ps.declare("n3", Shape{5000}, ParamInit::normal(3.0f));
  ps.allocate(DType::kF32);
  // Dirty every parameter first: initialize() must set every value, zeros included.
  for (const auto& e : ps.entries())
    for (int64_t i = 0; i < e.shape.numel(); ++i)
      ps.flat_values().data<float>()[e.offset + i] = 7.0f;
  ps.initialize(2024);
  for (double x : values_of(ps.value(z))) ASSERT_EQ(x, 0.0);
  for (double x : values_of(ps.value(o))) ASSERT_EQ(x, 1.0);
  for (const auto& [ref, std] : {std::pair{n, 0.02}, std::pair{n3, 3.0}}) {
    const auto v = values_of(ps.value(ref));
    double sum = 0, sum2 = 0;
    for (double x : v) {
      sum += x;
      sum2 += x * x;
    }
    const auto count = static_cast<double>(v.size());
    const double mean = sum / count;
    const double sd = std::sqrt(sum2 / count - mean * mean);
    EXPECT_NEAR(mean, 0.0, 5 * std / std::sqrt(count)) << std;
    EXPECT_NEAR(sd, std, 5 * std / std::sqrt(2 * count)) << std;
  }
  // The padding between parameters stays zero.
  const float* all = ps.flat_values().data<float>();
  for (int64_t i = 33; i < 48; ++i) EXPECT_EQ(all[ps.find("z")->offset + i], 0.0f) << i;
  const ParameterSet::Entry* last = ps.find("n3");
  for (int64_t i = last->offset + 5000; i < ps.padded_numel(); ++i) EXPECT_EQ(all[i], 0.0f) << i;
}

TEST(ParameterSet, InitialisationDependsOnlyOnSeedNameAndIndex) {
  ParameterSet a;
  a.declare("model.embed_tokens.weight", Shape{10, 8}, ParamInit::normal(0.02f));
  a.declare("model.norm.weight", Shape{8}, ParamInit::ones(), false);
  a.declare("lm_head.weight", Shape{12, 8}, ParamInit::normal(1.0f));
  a.allocate(DType::kF32);
  a.initialize(99);

  // Another order, extra parameters in between, and a different (same-size) shape.
  ParameterSet b;
  b.declare("extra.first", Shape{37}, ParamInit::normal(0.02f));
  b.declare("lm_head.weight", Shape{96}, ParamInit::normal(1.0f));
  b.declare("extra.second", Shape{5}, ParamInit::normal(1.0f));
  b.declare("model.norm.weight", Shape{8}, ParamInit::ones(), false);
  b.declare("model.embed_tokens.weight", Shape{10, 8}, ParamInit::normal(0.02f));
  b.allocate(DType::kF32);
  b.initialize(99);

  for (const auto& e : a.entries()) {
    const auto* other = b.find(e.name);
    ASSERT_NE(other, nullptr);
    ASSERT_NE(other->offset, e.offset) << "the test needs different layouts: " << e.name;
    const auto va = values_of(a.flat_values().flat_range(e.offset, e.shape));
    const auto vb = values_of(b.flat_values().flat_range(other->offset, other->shape));
    ASSERT_EQ(va, vb) << e.name;
  }

  // A parameter's values differ from another parameter's and from another seed's.
  ParameterSet c;
  c.declare("model.embed_tokens.weight", Shape{10, 8}, ParamInit::normal(0.02f));
  c.declare("lm_head.weight", Shape{12, 8}, ParamInit::normal(0.02f));
  c.allocate(DType::kF32);
  c.initialize(100);
  const auto a_embed = values_of(a.value(ParamRef{0}));
  const auto c_embed = values_of(c.value(ParamRef{0}));
  const auto c_head = values_of(c.value(ParamRef{1}));
  int same_seed = 0, same_name = 0;
  for (size_t i = 0; i < a_embed.size(); ++i) {
    same_seed += a_embed[i] == c_embed[i];
    same_name += c_embed[i] == c_head[i];
  }
  EXPECT_EQ(same_seed, 0);
  EXPECT_EQ(same_name, 0);
  // Re-initialising with the same seed reproduces the values exactly.
  const auto before = values_of(a.flat_values());
  a.initialize(99);
  EXPECT_EQ(values_of(a.flat_values()), before);
}

TEST(ParameterSet, PrecisionsAgree) {
  auto make = [](DType dtype) {
    ParameterSet ps;
    ps.declare("w", Shape{64, 33}, ParamInit::normal(0.02f));
    ps.declare("g", Shape{5}, ParamInit::ones());
    ps.declare("v", Shape{1000}, ParamInit::normal(1.7f));
    ps.allocate(dtype);
    ps.initialize(5);
    return ps;
  };
  const ParameterSet f64 = make(DType::kF64);
  const ParameterSet f32 = make(DType::kF32);
  const ParameterSet bf16 = make(DType::kBF16);
  const double* d = f64.flat_values().data<double>();
  const float* f = f32.flat_values().data<float>();
  const auto* h = static_cast<const uint16_t*>(bf16.flat_values().raw());
  int nonzero = 0;
  for (int64_t i = 0; i < f64.padded_numel(); ++i) {
    const auto rounded = static_cast<float>(d[i]);
    // Within one ulp of the f64 value rounded to f32.
    ASSERT_TRUE(f[i] == rounded || f[i] == std::nextafter(rounded, 1.0f) ||
                f[i] == std::nextafter(rounded, -1.0f))
        << i << ": f32 " << f[i] << " vs f64 " << d[i];
    // bf16 storage is the f32 draw rounded once.
    ASSERT_EQ(h[i], float_to_bf16(f[i])) << i;
    nonzero += d[i] != 0.0;
  }
  EXPECT_GT(nonzero, 64 * 33 / 2);
}

// ---- global shapes and shards ---------------------------------------------------------------

// Elements of `box` of a row-major tensor of shape `full` held in `all`, in row-major order.
std::vector<double> box_of(const std::vector<double>& all, const Shape& full,
                           const TensorBox& box) {
  std::vector<double> out;
  const int n = full.ndim();
  for (int64_t i = 0; i < full.numel(); ++i) {
    int64_t rest = i;
    bool inside = true;
    for (int d = n - 1; d >= 0; --d) {
      const int64_t index = rest % full[d];
      rest /= full[d];
      inside = inside && box.start[d] <= index && index < box.end(d);
    }
    if (inside) out.push_back(all[static_cast<size_t>(i)]);
  }
  return out;
}

TEST(ParameterSet, UnshardedValuesAreTheGeneratorsAtTheLocalIndex) {
  // What initialize() drew before parameters knew their shards: element i of parameter `name`
  // is std * normal01(seed, stream_id(name), i), rounded once. Sharding must not change it.
  ParameterSet ps;
  const ParamRef w =
      ps.declare("model.layers.0.mlp.up_proj.weight", Shape{24, 10}, ParamInit::normal(0.02f));
  const ParamRef v = ps.declare("v", Shape{7}, ShardSpec::whole(), ParamInit::normal(1.5f));
  ps.allocate(DType::kF32);
  ps.initialize(77);
  for (const auto& [ref, std] : {std::pair{w, 0.02f}, std::pair{v, 1.5f}}) {
    const ParameterSet::Entry& e = ps.entries()[ref.index];
    EXPECT_EQ(e.global_shape, e.shape);
    EXPECT_FALSE(e.shard.sharded());
    EXPECT_EQ(ps.global_box(ref), TensorBox::whole(e.shape));
    const float* p = ps.value(ref).data<float>();
    for (int64_t i = 0; i < e.shape.numel(); ++i) {
      const float expected = std * normal01(77, stream_id(e.name), static_cast<uint64_t>(i));
      ASSERT_EQ(std::memcmp(&p[i], &expected, sizeof(float)), 0) << e.name << " " << i;
    }
  }
}

// Every rank's shard of a parameter, in column or row blocks over 2 and 4 ranks (several
// ParameterSets in one process, as ranks would hold them), holds exactly the matching block of
// the unsharded parameter, bit for bit, in every storage dtype.
TEST(ParameterSet, EveryShardingInitialisesTheSameFullModel) {
  const std::string name = "model.layers.1.self_attn.q_proj.weight";
  const Shape global{16, 12};  // (out, in)
  const Shape global3{4, 8, 6};
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    ParameterSet whole;
    const ParamRef w = whole.declare(name, global, ParamInit::normal(0.02f));
    const ParamRef w3 = whole.declare("three", global3, ParamInit::normal(1.0f));
    whole.declare("norm", Shape{12}, ParamInit::ones(), false);
    whole.allocate(dtype);
    whole.initialize(2025);
    const std::vector<double> all = values_of(whole.value(w));
    const std::vector<double> all3 = values_of(whole.value(w3));
    for (const int count : {2, 4}) {
      for (const int dim : {0, 1, 2}) {  // row blocks, column blocks, the 3-D tensor's last dim
        for (int rank = 0; rank < count; ++rank) {
          ParameterSet shard;
          shard.declare("padding.first", Shape{5}, ParamInit::normal(1.0f));  // other offsets
          const ParamRef s =
              dim < 2 ? shard.declare(name, global, ShardSpec::blocks(dim, rank, count),
                                      ParamInit::normal(0.02f))
                      : shard.declare("three", global3, ShardSpec::blocks(1, rank, count),
                                      ParamInit::normal(1.0f));
          shard.allocate(dtype);
          shard.initialize(2025);
          const ParameterSet::Entry& e = shard.entries()[s.index];
          const Shape& full = dim < 2 ? global : global3;
          const int sharded_dim = dim < 2 ? dim : 1;
          ASSERT_EQ(e.shape, full.with_dim(sharded_dim, full[sharded_dim] / count));
          EXPECT_EQ(e.global_shape, full);
          EXPECT_EQ(shard.value(s).shape(), e.shape);  // views keep the local shape
          const TensorBox box = shard.global_box(s);
          EXPECT_EQ(box.count, e.shape);
          EXPECT_EQ(box.start[sharded_dim], rank * e.shape[sharded_dim]);
          const std::vector<double> expected = box_of(dim < 2 ? all : all3, full, box);
          ASSERT_EQ(values_of(shard.value(s)), expected)
              << dtype_name(dtype) << " dim " << sharded_dim << " rank " << rank << "/" << count;
        }
      }
    }
  }
}

TEST(ParameterSet, ImpossibleShardsNameTheParameter) {
  const auto error_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const ShapeError& e) {
      return e.what();
    }
    return "no ShapeError";
  };
  ParameterSet ps;
  EXPECT_EQ(error_of([&] {
              ps.declare("w", Shape{10, 6}, ShardSpec::blocks(0, 0, 4), ParamInit::zeros());
            }),
            "parameter w: dimension 0 of shape [10, 6] does not split into 4 equal shards");
  EXPECT_EQ(error_of([&] {
              ps.declare("w", Shape{10, 6}, ShardSpec::blocks(1, 3, 3), ParamInit::zeros());
            }),
            "parameter w: shard 3 of 3 does not exist");
  EXPECT_EQ(error_of([&] {
              ps.declare("w", Shape{10, 6}, ShardSpec::blocks(2, 0, 2), ParamInit::zeros());
            }),
            "parameter w: cannot shard dimension 2 of shape [10, 6]");
  EXPECT_EQ(
      error_of([&] { ps.declare("b", Shape{6}, ShardSpec::blocks(0, -1, 2), ParamInit::zeros()); }),
      "parameter b: shard -1 of 2 does not exist");
  EXPECT_TRUE(ps.entries().empty());  // nothing half declared
  // A shard of one is the whole tensor, even of a 0-d one.
  ps.declare("s", Shape{}, ShardSpec::blocks(0, 0, 1), ParamInit::ones());
  EXPECT_EQ(ps.entries().back().shape, Shape{});
}

}  // namespace
}  // namespace memento

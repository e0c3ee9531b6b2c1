#include "core/parameters.h"

#include "core/rng.h"

namespace memento {

ParamRef ParameterSet::declare(const std::string& name, Shape shape, ParamInit init,
                               bool weight_decay) {
  return declare(name, shape, ShardSpec::whole(), init, weight_decay);
}

ParamRef ParameterSet::declare(const std::string& name, Shape global_shape, ShardSpec shard,
                               ParamInit init, bool weight_decay) {
  MEMENTO_CHECK(!allocated(), "declare(", name, ") after allocate()");
  MEMENTO_CHECK(find(name) == nullptr, "parameter declared twice: ", name);
  Shape shape = global_shape;
  if (shard != ShardSpec::whole()) {
    MEMENTO_EXPECT(shard.count >= 1 && 0 <= shard.index && shard.index < shard.count, ShapeError,
                   "parameter ", name, ": shard ", shard.index, " of ", shard.count,
                   " does not exist");
    MEMENTO_EXPECT(0 <= shard.dim && shard.dim < global_shape.ndim(), ShapeError, "parameter ",
                   name, ": cannot shard dimension ", shard.dim, " of shape ", global_shape.str());
    MEMENTO_EXPECT(global_shape[shard.dim] % shard.count == 0, ShapeError, "parameter ", name,
                   ": dimension ", shard.dim, " of shape ", global_shape.str(),
                   " does not split into ", shard.count, " equal shards");
    shape = global_shape.with_dim(shard.dim, global_shape[shard.dim] / shard.count);
  }
  entries_.push_back({name, shape, declared_end_, init, weight_decay, global_shape, shard});
  declared_end_ += (shape.numel() + kAlignElements - 1) / kAlignElements * kAlignElements;
  return ParamRef{static_cast<int>(entries_.size()) - 1};
}

std::vector<ParamRef> ParameterSet::declare_stacked(const std::vector<StackedPart>& parts,
                                                    ParamInit init, bool weight_decay) {
  std::vector<ParamRef> refs;
  for (const StackedPart& part : parts) {
    if (!refs.empty()) {
      // Back to back: the previous part's padding is taken back.
      const Entry& previous = entries_.at(refs.back().index);
      declared_end_ = previous.offset + previous.shape.numel();
    }
    refs.push_back(declare(part.name, part.shape, init, weight_decay));
  }
  return refs;
}

TensorBox ParameterSet::Entry::global_box() const {
  TensorBox box = TensorBox::whole(global_shape);
  box.count = shape;
  if (shard.sharded()) box.start = box.start.with_dim(shard.dim, shard.index * shape[shard.dim]);
  return box;
}

void ParameterSet::pad_to_multiple_of(int64_t multiple) {
  MEMENTO_CHECK(!allocated() && multiple > 0, "pad_to_multiple_of(", multiple, ")");
  multiple_ = multiple;
}

int64_t ParameterSet::padded_numel() const {
  const int64_t unit = multiple_ * kAlignElements;
  return (declared_end_ + unit - 1) / unit * unit;
}

void ParameterSet::allocate(DType dtype, Device device, MemoryResource* resource,
                            DType compute_dtype) {
  MEMENTO_CHECK(!allocated(), "parameters allocated twice");
  values_ = Tensor::zeros(Shape{padded_numel()}, dtype, device, resource);
  grads_ = Tensor::zeros(Shape{padded_numel()}, dtype, device, resource);
  if (compute_dtype != dtype)
    compute_ = Tensor::zeros(Shape{padded_numel()}, compute_dtype, device, resource);
}

void ParameterSet::initialize(uint64_t seed) {
  MEMENTO_CHECK(allocated(), "initialize() before allocate()");
  if (device().is_meta()) return;
  // Drawn into host memory; a GPU's buffer receives one copy.
  const Tensor staging =
      device().is_cpu() ? values_ : Tensor::zeros(values_.shape(), values_.dtype());
  for (const Entry& e : entries_) {
    const uint64_t stream = stream_id(e.name);
    const TensorView v = staging.view().flat_range(e.offset, e.shape);
    const int64_t n = e.shape.numel();
    // Local element i is element global(i) of the global tensor. The local tensor is a run of
    // blocks of `block` contiguous elements (its dimensions from shard.dim on); in the global
    // tensor consecutive blocks are `global_block` apart and this shard's block starts `first`
    // into each. Unsharded, global(i) == i: the values are those of before sharding existed.
    const bool sharded = e.shard.sharded();
    int64_t block = 1;
    for (int k = e.shard.dim; sharded && k < e.shape.ndim(); ++k) block *= e.shape[k];
    const int64_t global_block = block * e.shard.count;
    const int64_t first = block * e.shard.index;
    const auto global = [&](int64_t i) {
      return static_cast<uint64_t>(sharded ? i / block * global_block + first + i % block : i);
    };
    auto fill = [&](auto* p) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        switch (e.init.kind) {
          case ParamInit::Kind::kNormal:
            p[i] = e.init.std * normal01(seed, stream, global(i));
            break;
          case ParamInit::Kind::kOnes:
            p[i] = 1;
            break;
          case ParamInit::Kind::kZeros:
            p[i] = 0;
            break;
        }
      }
    };
    if (v.dtype() == DType::kF64) {
      fill(v.data<double>());
    } else {
      // Draw in fp32, then round once into the storage dtype.
      Tensor tmp = Tensor::empty(e.shape, DType::kF32);
      fill(tmp.data<float>());
      copy(tmp, v);
    }
  }
  if (!device().is_cpu()) copy(staging, values_);
  refresh_compute();
}

void ParameterSet::refresh_compute() {
  if (compute_.defined() && !device().is_meta()) copy(values_, compute_);
}

void ParameterSet::zero_grads() { fill_zero(grads_); }

TensorView ParameterSet::value(ParamRef ref) const {
  const Entry& e = entries_.at(ref.index);
  return values_.view().flat_range(e.offset, e.shape);
}

TensorView ParameterSet::compute(ParamRef ref) const {
  const Entry& e = entries_.at(ref.index);
  return flat_compute().flat_range(e.offset, e.shape);
}

bool ParameterSet::adjacent(ParamRef a, ParamRef b) const {
  const Entry& ea = entries_.at(a.index);
  return entries_.at(b.index).offset == ea.offset + ea.shape.numel();
}

namespace {
// Checks that [offset, offset + n) ends where a parameter ends (no padding, no partial entry).
void expect_span(const std::vector<ParameterSet::Entry>& entries, int64_t offset, int64_t n) {
  for (const ParameterSet::Entry& e : entries)
    if (e.offset + e.shape.numel() == offset + n) return;
  MEMENTO_CHECK(false, "parameter span [", offset, ", ", offset + n,
                ") does not end at the end of a parameter");
}
}  // namespace

TensorView ParameterSet::value_span(ParamRef first, Shape shape) const {
  const Entry& e = entries_.at(first.index);
  expect_span(entries_, e.offset, shape.numel());
  return values_.view().flat_range(e.offset, shape);
}

TensorView ParameterSet::compute_span(ParamRef first, Shape shape) const {
  const Entry& e = entries_.at(first.index);
  expect_span(entries_, e.offset, shape.numel());
  return flat_compute().flat_range(e.offset, shape);
}

TensorView ParameterSet::grad_span(ParamRef first, Shape shape) const {
  const Entry& e = entries_.at(first.index);
  expect_span(entries_, e.offset, shape.numel());
  return grads_.view().flat_range(e.offset, shape);
}

TensorView ParameterSet::grad(ParamRef ref) const {
  const Entry& e = entries_.at(ref.index);
  return grads_.view().flat_range(e.offset, e.shape);
}

const ParameterSet::Entry* ParameterSet::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

int64_t ParameterSet::numel() const {
  int64_t n = 0;
  for (const Entry& e : entries_) n += e.shape.numel();
  return n;
}

}  // namespace memento

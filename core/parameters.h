// A rank's parameters and their gradients in flat buffers with named views (ARCHITECTURE
// contract 1). Layers declare their parameters at construction and hold ParamRefs; after
// allocate() the values and gradients are views into two contiguous buffers with the same layout.
// Reduction buckets, optimizer states, ZeRO shards and snapshots are ranges of these buffers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/tensor_box.h"

namespace memento {

struct ParamInit {
  enum class Kind : uint8_t { kNormal, kOnes, kZeros };
  Kind kind = Kind::kNormal;
  float std = 0.02f;  // for kNormal

  static ParamInit normal(float std) { return {Kind::kNormal, std}; }
  static ParamInit ones() { return {Kind::kOnes, 0.0f}; }
  static ParamInit zeros() { return {Kind::kZeros, 0.0f}; }
};

struct ParamRef {
  int index = -1;
};

// Elements [begin, end) of the flat buffers: a reduction bucket, a ZeRO shard, a snapshot piece.
struct FlatRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Which part of a parameter's global tensor this rank holds: block `index` of `count` equal
// blocks along dimension `dim` (a tensor-parallel shard). count 1 (the default) is the whole
// tensor. E.g. a column-parallel (out, in) weight over 4 ranks is {0, rank, 4}; row-parallel is
// {1, rank, 4}.
struct ShardSpec {
  int dim = 0;
  int64_t index = 0;
  int64_t count = 1;

  bool sharded() const { return count > 1; }
  static ShardSpec whole() { return {}; }
  static ShardSpec blocks(int dim, int64_t index, int64_t count) { return {dim, index, count}; }
  friend bool operator==(const ShardSpec&, const ShardSpec&) = default;
};

class ParameterSet {
 public:
  // Offsets are rounded up to this many elements so every view starts cache-line aligned.
  static constexpr int64_t kAlignElements = 16;

  struct Entry {
    std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
    Shape shape;       // e.g. [out, in] for a linear weight
    int64_t offset;    // in elements, into the flat buffers
    ParamInit init;
    bool weight_decay;   // false for norms and biases
    Shape global_shape;  // of the whole tensor across the shards; == shape when unsharded
    ShardSpec shard;     // which block of global_shape this rank holds

    // The box of the global tensor that this rank's `shape` elements are (all of it unsharded):
    // what a sharded parameter registers with the checkpoint registry (add_tensor_box).
    TensorBox global_box() const;
  };

  // Before allocate(): registers a parameter. Names are unique.
  ParamRef declare(const std::string& name, Shape shape, ParamInit init, bool weight_decay = true);
  // Before allocate(): registers parameters back to back, with no alignment padding between them
  // (only after the last), so that they can be used as one tensor (a stacked weight).
  struct StackedPart {
    std::string name;
    Shape shape;
  };
  std::vector<ParamRef> declare_stacked(const std::vector<StackedPart>& parts, ParamInit init,
                                        bool weight_decay = true);
  // Before allocate(): registers this rank's shard `shard` of a parameter whose whole tensor has
  // shape `global_shape`; the local shape (Entry::shape) is global_shape with dimension shard.dim
  // divided by shard.count. Throws ShapeError naming the parameter unless 0 <= dim < ndim,
  // 0 <= index < count and count divides global_shape[dim].
  ParamRef declare(const std::string& name, Shape global_shape, ShardSpec shard, ParamInit init,
                   bool weight_decay = true);

  // Before allocate(): rounds the flat buffers' length up to a multiple of `multiple` elements
  // (times kAlignElements), so that they split into equal aligned shards.
  void pad_to_multiple_of(int64_t multiple);

  // Allocates the value and gradient buffers (gradients zeroed) on `device`.
  void allocate(DType dtype, Device device = Device::cpu(), MemoryResource* resource = nullptr) {
    allocate(dtype, device, resource, dtype);
  }
  // Mixed precision: values (the master weights) and gradients in `dtype`, plus a third flat
  // buffer with the same layout in `compute_dtype` (e.g. fp32 masters, bf16 compute copies),
  // which refresh_compute() and the fused optimizer keep equal to the values rounded once.
  void allocate(DType dtype, Device device, MemoryResource* resource, DType compute_dtype);
  bool allocated() const { return values_.defined(); }
  // Fills every value from the counter-based RNG keyed by (seed, name, element index), on the
  // host (staged and copied for a GPU), then refreshes the compute copy. The index is the
  // element's row-major index in the *global* tensor, so every sharding of a parameter holds
  // the matching block of the same values (ARCHITECTURE contract 7).
  void initialize(uint64_t seed);
  void zero_grads();
  // Rounds the values into the compute copy (after loading or changing values outside the
  // optimizer). Nothing to do without a separate compute dtype.
  void refresh_compute();

  TensorView value(ParamRef ref) const;
  TensorView grad(ParamRef ref) const;
  // The weight layers compute with: the compute copy when there is one, else the value.
  TensorView compute(ParamRef ref) const;
  // True when b's elements follow a's in the flat buffers with no padding between them: the two
  // can then be used as one tensor (e.g. gate_proj and up_proj stacked, for one GEMM).
  bool adjacent(ParamRef a, ParamRef b) const;
  // value(), compute() and grad() of the parameters from `first` on, viewed as one tensor of
  // `shape` (checked to end at the end of a parameter).
  TensorView value_span(ParamRef first, Shape shape) const;
  TensorView compute_span(ParamRef first, Shape shape) const;
  TensorView grad_span(ParamRef first, Shape shape) const;
  DType compute_dtype() const { return compute_.defined() ? compute_.dtype() : dtype(); }
  bool has_compute_copy() const { return compute_.defined(); }
  TensorView flat_compute() const { return compute_.defined() ? compute_.view() : values_.view(); }
  // Bytes of the values, gradients and compute copy.
  size_t bytes() const { return values_.bytes() + grads_.bytes() + compute_.bytes(); }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;  // nullptr when absent
  // entries()[ref.index].global_box(): e.g.
  //   registry.add_tensor_box("model/" + e.name, params.value(ref), e.global_shape,
  //                           params.global_box(ref));
  TensorBox global_box(ParamRef ref) const { return entries_.at(ref.index).global_box(); }
  int64_t numel() const;         // parameters, without alignment padding
  int64_t padded_numel() const;  // length of the flat buffers
  DType dtype() const { return values_.dtype(); }
  Device device() const { return values_.device(); }
  TensorView flat_values() const { return values_; }
  TensorView flat_grads() const { return grads_; }

 private:
  std::vector<Entry> entries_;
  int64_t declared_end_ = 0;  // end of the last declared parameter (aligned)
  int64_t multiple_ = 1;
  Tensor values_;   // (padded_numel,)
  Tensor grads_;    // (padded_numel,)
  Tensor compute_;  // (padded_numel,) in the compute dtype, or undefined
};

}  // namespace memento

// The one registry of everything stateful (ARCHITECTURE contract 8): parameters, optimizer
// states, scaling histories, RNG counters, the data cursor, the LR schedule and the step. Every
// checkpoint engine saves what is registered here and restores it in place.
//
// Names are paths "group/name": the group is the first segment ("model", "optim", "state",
// "meta", ...), the rest may hold more '/' (e.g. "optim/exp_avg/model.norm.weight"). The
// registry holds views and pointers only; the caller keeps the storage alive and in place for
// as long as the registry is used.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "checkpoint/slice_plan.h"
#include "core/tensor.h"
#include "core/tensor_box.h"

namespace memento::checkpoint {

enum class EntryKind : uint8_t { kTensor, kInt, kDouble, kString };
std::string_view entry_kind_name(EntryKind kind);  // "tensor", "int", "double", "string"

struct StateEntry {
  std::string name;  // "group/name"
  EntryKind kind = EntryKind::kTensor;
  TensorView tensor;                    // kTensor: restored in place, any dtype
  int64_t* int_value = nullptr;         // kInt
  double* double_value = nullptr;       // kDouble
  std::string* string_value = nullptr;  // kString
  // kTensor: which part of a logical tensor of shape full_shape `tensor` holds. One of
  // - the whole tensor: full_shape == tensor.shape(), offset 0, not a box;
  // - a flat range: elements [offset, offset + tensor.numel()) of the row-major flattening;
  //   `tensor` is 1-D (a ZeRO-1 shard);
  // - a box (is_box): indices [box_start[d], box_start[d] + tensor.size(d)) of each dimension d
  //   (a tensor-parallel shard); box_start has full_shape's number of dimensions.
  Shape full_shape;
  int64_t offset = 0;
  bool is_box = false;
  Shape box_start;

  std::string_view group() const { return std::string_view(name).substr(0, name.find('/')); }
  // A tensor entry holding only part (possibly none) of its logical tensor.
  bool is_partial() const {
    return kind == EntryKind::kTensor && tensor.numel() != full_shape.numel();
  }
  // kTensor: the part of the logical tensor `tensor` holds, laid out as `tensor` is.
  TensorRegion region() const;
};

class StateRegistry {
 public:
  // Each registers one entry under `name`. A name that is malformed (see valid_state_name),
  // already registered, or the parent or child path of a registered name is a bug (fatal).
  // Pointers must be non-null and tensors must have storage (not kMeta).
  void add_tensor(std::string name, TensorView view);
  // Registers elements [offset, offset + local.numel()) of the row-major flattening of the
  // logical tensor `name` of shape full_shape (each rank registers its part; a part may be
  // empty). `local` must be 1-D and the range inside the tensor (else fatal). A slice covering
  // the whole tensor is the same as add_tensor(name, local viewed with full_shape).
  void add_tensor_slice(std::string name, TensorView local, Shape full_shape, int64_t offset);
  // Registers the box `box` of the logical tensor `name` of shape full_shape (a tensor-parallel
  // shard, e.g. ParameterSet::global_box), held row-major in `local`, whose shape must be
  // box.count; the box must lie inside the tensor (else fatal). A box of the whole tensor is
  // the same as add_tensor(name, local).
  void add_tensor_box(std::string name, TensorView local, Shape full_shape, const TensorBox& box);
  void add_int(std::string name, int64_t* value);
  void add_double(std::string name, double* value);
  void add_string(std::string name, std::string* value);

  // Entries in registration order.
  const std::vector<StateEntry>& entries() const { return entries_; }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  const StateEntry* find(std::string_view name) const;  // nullptr when absent
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Total bytes of the registered tensors (of this rank's slices).
  size_t tensor_bytes() const;

 private:
  void add(StateEntry entry);

  std::vector<StateEntry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
  std::unordered_set<std::string> interior_;       // proper prefixes ("a", "a/b") of names
};

// True when `name` is "group/rest": at least two '/'-separated segments, none empty, "." or "..",
// and only printable ASCII. Such names map one to one onto HDF5 paths.
bool valid_state_name(std::string_view name);

}  // namespace memento::checkpoint

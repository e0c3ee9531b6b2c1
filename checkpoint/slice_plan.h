// Which stored slices of a tensor to read to assemble a region of it: the arithmetic of
// resharding, free of HDF5. A region is a flat range of the tensor's row-major flattening (a
// ZeRO-1 shard of a flat buffer) or a box (a tensor-parallel shard; a whole tensor is the box of
// all of it). Every region is a union of boxes, so boxes are what the planner covers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/tensor_box.h"

namespace memento::checkpoint {

// Elements [begin, end).
struct ElementRange {
  int64_t begin = 0;
  int64_t end = 0;

  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  friend bool operator==(const ElementRange&, const ElementRange&) = default;
};

// A part of a tensor of shape `full`, and how a buffer or dataset holding it lays it out: a flat
// range as a 1-D array of its elements, a box as an array of the box's shape. Either way the
// elements are in the tensor's row-major order.
struct TensorRegion {
  Shape full;
  bool is_flat = false;
  ElementRange range;  // is_flat
  TensorBox box;       // !is_flat

  static TensorRegion flat(const Shape& full, ElementRange range) {
    return {full, true, range, {}};
  }
  static TensorRegion of_box(const Shape& full, const TensorBox& box) {
    return {full, false, {}, box};
  }
  static TensorRegion whole(const Shape& full) { return of_box(full, TensorBox::whole(full)); }

  int64_t numel() const { return is_flat ? range.size() : box.numel(); }
  // The boxes whose union the region is, disjoint and in row-major order: the box itself, or
  // for a flat range at most 2 * ndim - 1 boxes, each contiguous in the flattening. None when
  // the region is empty.
  std::vector<TensorBox> boxes() const;
  // Where the tensor's element `index` (inside the region) sits in the region's layout.
  int64_t position(const Shape& index) const;
  // Calls fn(index, length) for the region's elements in its layout's order, in runs of
  // consecutive elements along the last dimension (`index` is the run's first element).
  void for_each_run(const std::function<void(const Shape& index, int64_t length)>& fn) const;
  friend bool operator==(const TensorRegion& a, const TensorRegion& b) {
    return a.full == b.full && a.is_flat == b.is_flat &&
           (a.is_flat ? a.range == b.range : a.box == b.box);
  }
};

// Row-major index of element `index` of a tensor of shape `full`, and back.
int64_t flat_index(const Shape& full, const Shape& index);
Shape unflatten(const Shape& full, int64_t flat);

// The box of elements in both a and b; nullopt when they share none (or one is empty).
std::optional<TensorBox> intersect(const TensorBox& a, const TensorBox& b);
// The elements of a that are not in b, as at most 2 * ndim disjoint boxes.
std::vector<TensorBox> subtract(const TensorBox& a, const TensorBox& b);

// Elements `box` (of the tensor) taken from stored slice number `source`.
struct SlicePiece {
  size_t source = 0;
  TensorBox box;
  friend bool operator==(const SlicePiece&, const SlicePiece&) = default;
};

struct CoverPlan {
  std::vector<SlicePiece> pieces;  // disjoint, each inside its source and the request
  // Set when incomplete: a box of elements that no slice holds, the one holding the first such
  // element in row-major order (its start).
  std::optional<TensorBox> gap;
};

// Covers `requested` with pieces of the `stored` regions (of the same tensor), which may overlap
// (a tensor every rank saved whole) or be empty. The stored slices holding most of the request
// are taken first (the first listed on ties), each for all of the request it holds that no
// earlier one gave, so replicas are read once and an exact match is one piece.
CoverPlan plan_cover(const TensorRegion& requested, const std::vector<TensorRegion>& stored);

}  // namespace memento::checkpoint

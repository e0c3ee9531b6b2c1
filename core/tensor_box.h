// A box (an N-dimensional hyperslab) of a tensor: which part of a global tensor a tensor-parallel
// shard holds, and how checkpoints name the parts they store (checkpoint/state_registry.h).
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace memento {

// The elements of a tensor whose index in each dimension d lies in
// [start[d], start[d] + count[d]). `start` is an index tuple held in a Shape (one entry per
// dimension of the tensor); `count` is the box's own shape. A 0-d tensor's box has no dimensions.
struct TensorBox {
  Shape start;
  Shape count;

  int ndim() const { return count.ndim(); }
  int64_t numel() const { return count.numel(); }
  int64_t end(int d) const { return start[d] + count[d]; }
  // "[0:4, 8:16]": start:end per dimension, as Python slices.
  std::string str() const {
    std::string s = "[";
    for (int d = 0; d < ndim(); ++d) {
      if (d > 0) s += ", ";
      s += std::to_string(start[d]);
      s += ':';
      s += std::to_string(end(d));
    }
    return s + "]";
  }
  // The whole of a tensor of shape `shape`.
  static TensorBox whole(const Shape& shape) {
    Shape zero = shape;
    for (int d = 0; d < shape.ndim(); ++d) zero = zero.with_dim(d, 0);
    return {zero, shape};
  }
  // Steps `index` (inside the box) to the next index in row-major order over the box's first
  // `dims` dimensions, leaving the others as they are; false (index back at start) after the
  // last. An odometer: walk a box row by row with dims = ndim - 1.
  bool next_index(Shape& index, int dims) const {
    for (int d = dims - 1; d >= 0; --d) {
      if (index[d] + 1 < end(d)) {
        index = index.with_dim(d, index[d] + 1);
        return true;
      }
      index = index.with_dim(d, start[d]);
    }
    return false;
  }
  // True when the box lies inside a tensor of shape `shape` (same number of dimensions).
  bool inside(const Shape& shape) const {
    if (start.ndim() != shape.ndim() || count.ndim() != shape.ndim()) return false;
    for (int d = 0; d < ndim(); ++d) {
      if (start[d] < 0 || count[d] < 0 || end(d) > shape[d]) return false;
    }
    return true;
  }
  friend bool operator==(const TensorBox& a, const TensorBox& b) {
    return a.start == b.start && a.count == b.count;
  }
};

}  // namespace memento

// Which stored slices of a tensor to read to assemble a range of its elements: the arithmetic of
// resharding, free of HDF5. Elements are counted in the row-major flattening of the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace memento::checkpoint {

// Elements [begin, end).
struct ElementRange {
  int64_t begin = 0;
  int64_t end = 0;

  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  friend bool operator==(const ElementRange&, const ElementRange&) = default;
};

// Elements `range` taken from stored slice number `source`.
struct SlicePiece {
  size_t source = 0;
  ElementRange range;
  friend bool operator==(const SlicePiece&, const SlicePiece&) = default;
};

struct CoverPlan {
  std::vector<SlicePiece> pieces;   // ascending, disjoint, each inside its source and the request
  std::optional<ElementRange> gap;  // set when incomplete: the first elements no slice holds
};

// Covers `requested` with pieces of the `stored` slices, which may overlap (a tensor every rank
// saved whole) or be empty. Greedy: at each element the slice that reaches furthest, the first
// listed on ties, so each slice is read at most once and replicas are read once.
CoverPlan plan_cover(ElementRange requested, const std::vector<ElementRange>& stored);

}  // namespace memento::checkpoint

#include "checkpoint/slice_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace memento::checkpoint {
namespace {

using Pieces = std::vector<SlicePiece>;

TensorBox box(Shape start, Shape count) { return {start, count}; }
TensorRegion flat(Shape full, int64_t begin, int64_t end) {
  return TensorRegion::flat(full, {begin, end});
}
TensorRegion boxed(Shape full, Shape start, Shape count) {
  return TensorRegion::of_box(full, {start, count});
}

// Row-major indices of the elements of `region`, in the order its layout holds them.
std::vector<int64_t> elements_of(const TensorRegion& region) {
  std::vector<int64_t> out;
  region.for_each_run([&](const Shape& index, int64_t length) {
    for (int64_t i = 0; i < length; ++i) out.push_back(flat_index(region.full, index) + i);
  });
  return out;
}

std::vector<int64_t> elements_of(const Shape& full, const std::vector<TensorBox>& boxes) {
  std::vector<int64_t> out;
  for (const TensorBox& b : boxes) {
    const std::vector<int64_t> e = elements_of(TensorRegion::of_box(full, b));
    out.insert(out.end(), e.begin(), e.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- flat ranges (one dimension: boxes are ranges) ------------------------------------------

TEST(SlicePlan, ExactSliceIsOnePiece) {
  const Shape full{30};
  const CoverPlan plan =
      plan_cover(flat(full, 10, 20), {flat(full, 0, 10), flat(full, 10, 20), flat(full, 20, 30)});
  EXPECT_EQ(plan.pieces, (Pieces{{1, box({10}, {10})}}));
  EXPECT_FALSE(plan.gap);
}

TEST(SlicePlan, RangeAcrossSlicesTakesEachOverlap) {
  const Shape full{30};
  const CoverPlan plan =
      plan_cover(flat(full, 5, 27), {flat(full, 20, 30), flat(full, 0, 10), flat(full, 10, 20)});
  // The slice holding most of the request first, then the first listed on ties.
  EXPECT_EQ(plan.pieces, (Pieces{{2, box({10}, {10})}, {0, box({20}, {7})}, {1, box({5}, {5})}}));
  EXPECT_FALSE(plan.gap);
}

TEST(SlicePlan, ReplicasAreReadOnceAndEmptySlicesIgnored) {
  const Shape full{8};
  const TensorRegion all = TensorRegion::whole(full);
  EXPECT_EQ(plan_cover(all, {all, all, all}).pieces, (Pieces{{0, box({0}, {8})}}));
  const Shape ten{10};
  EXPECT_EQ(plan_cover(flat(ten, 0, 10),
                       {flat(ten, 0, 4), flat(ten, 0, 6), flat(ten, 3, 10), flat(ten, 5, 5)})
                .pieces,
            (Pieces{{2, box({3}, {7})}, {1, box({0}, {3})}}));
  EXPECT_EQ(plan_cover(flat(ten, 2, 2), {}).pieces, Pieces{});
  EXPECT_FALSE(plan_cover(flat(ten, 2, 2), {}).gap);
}

TEST(SlicePlan, GapsAreReportedFromTheirFirstElement) {
  const Shape full{12};
  CoverPlan plan = plan_cover(flat(full, 0, 10), {flat(full, 0, 3), flat(full, 5, 10)});
  ASSERT_TRUE(plan.gap);
  EXPECT_EQ(*plan.gap, box({3}, {2}));
  plan = plan_cover(flat(full, 0, 10), {flat(full, 0, 3)});
  EXPECT_EQ(*plan.gap, box({3}, {7}));
  plan = plan_cover(flat(full, 2, 10), {flat(full, 5, 7), flat(full, 4, 12)});
  EXPECT_EQ(*plan.gap, box({2}, {2}));
  plan = plan_cover(flat(full, 0, 4), {});
  EXPECT_EQ(*plan.gap, box({0}, {4}));
  plan = plan_cover(flat(full, 0, 4), {flat(full, 6, 9)});
  EXPECT_EQ(*plan.gap, box({0}, {4}));
}

// ---- boxes ----------------------------------------------------------------------------------

TEST(SlicePlan, FlatRangeIsAFewContiguousBoxes) {
  const Shape full{3, 4, 5};  // 60 elements
  // [7, 53): the rest of row [0, 1], rows [0, 2..3], matrices [1], rows [2, 0..1], [2, 2, 0..3).
  const std::vector<TensorBox> boxes = flat(full, 7, 53).boxes();
  EXPECT_EQ(boxes, (std::vector<TensorBox>{box({0, 1, 2}, {1, 1, 3}), box({0, 2, 0}, {1, 2, 5}),
                                           box({1, 0, 0}, {1, 4, 5}), box({2, 0, 0}, {1, 2, 5}),
                                           box({2, 2, 0}, {1, 1, 3})}));
  EXPECT_LE(static_cast<int>(boxes.size()), 2 * full.ndim() - 1);
  std::vector<int64_t> expected;
  for (int64_t i = 7; i < 53; ++i) expected.push_back(i);
  EXPECT_EQ(elements_of(full, boxes), expected);
  EXPECT_EQ(elements_of(flat(full, 7, 53)), expected);
  EXPECT_EQ(flat(full, 0, 60).boxes(), (std::vector<TensorBox>{box({0, 0, 0}, {3, 4, 5})}));
  EXPECT_TRUE(flat(full, 9, 9).boxes().empty());
}

TEST(SlicePlan, RegionPositionsFollowTheLayout) {
  const Shape full{4, 6};
  const TensorRegion b = boxed(full, {1, 2}, {2, 3});
  EXPECT_EQ(elements_of(b), (std::vector<int64_t>{8, 9, 10, 14, 15, 16}));
  EXPECT_EQ(b.position({1, 2}), 0);
  EXPECT_EQ(b.position({2, 4}), 5);
  const TensorRegion f = flat(full, 5, 20);
  EXPECT_EQ(f.position({1, 0}), 1);
  EXPECT_EQ(unflatten(full, 17), (Shape{2, 5}));
  EXPECT_EQ(flat_index(full, Shape{2, 5}), 17);
}

TEST(SlicePlan, IntersectAndSubtractPartitionABox) {
  const TensorBox a = box({0, 0, 0}, {4, 5, 6});
  const TensorBox b = box({1, 2, 3}, {2, 2, 9});  // sticks out of a in the last dimension
  const auto common = intersect(a, b);
  ASSERT_TRUE(common);
  EXPECT_EQ(*common, box({1, 2, 3}, {2, 2, 3}));
  std::vector<TensorBox> parts = subtract(a, b);
  EXPECT_LE(parts.size(), 6u);
  parts.push_back(*common);
  std::vector<int64_t> all;
  for (int64_t i = 0; i < 120; ++i) all.push_back(i);
  EXPECT_EQ(elements_of(Shape{4, 5, 6}, parts), all);  // disjoint and complete
  EXPECT_FALSE(intersect(a, box({4, 0, 0}, {1, 5, 6})));
  EXPECT_EQ(subtract(a, box({4, 0, 0}, {1, 5, 6})), std::vector<TensorBox>{a});
  EXPECT_TRUE(subtract(a, a).empty());
}

TEST(SlicePlan, ColumnBlocksCoverRowBlocks) {
  const Shape full{8, 12};
  const std::vector<TensorRegion> columns = {boxed(full, {0, 0}, {8, 6}),
                                             boxed(full, {0, 6}, {8, 6})};
  const CoverPlan plan = plan_cover(boxed(full, {2, 0}, {2, 12}), columns);
  EXPECT_EQ(plan.pieces, (Pieces{{0, box({2, 0}, {2, 6})}, {1, box({2, 6}, {2, 6})}}));
  EXPECT_FALSE(plan.gap);
  // A flat range across rows, from column blocks: every piece inside its block.
  const CoverPlan ranged = plan_cover(flat(full, 17, 50), columns);
  EXPECT_FALSE(ranged.gap);
  std::vector<TensorBox> boxes;
  for (const SlicePiece& p : ranged.pieces) {
    EXPECT_TRUE(intersect(p.box, columns[p.source].box) == p.box);
    boxes.push_back(p.box);
  }
  std::vector<int64_t> expected;
  for (int64_t i = 17; i < 50; ++i) expected.push_back(i);
  EXPECT_EQ(elements_of(full, boxes), expected);
}

TEST(SlicePlan, MissingBoxIsReportedFromItsFirstElement) {
  const Shape full{6, 8};
  // Columns 0..3 saved whole, columns 4..7 only in rows 0..2.
  const CoverPlan plan = plan_cover(TensorRegion::whole(full),
                                    {boxed(full, {0, 0}, {6, 4}), boxed(full, {0, 4}, {3, 4})});
  ASSERT_TRUE(plan.gap);
  EXPECT_EQ(*plan.gap, box({3, 4}, {3, 4}));
  EXPECT_EQ(plan.gap->str(), "[3:6, 4:8]");
}

// Random requests against random layouts: the pieces are disjoint, inside their sources, and
// together exactly the request's elements when the layout covers the tensor.
TEST(SlicePlan, RandomLayoutsCoverExactly) {
  std::mt19937 rng(7);
  const Shape full{6, 10};
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<TensorRegion> stored;
    // A complete layout: row or column blocks, or a flat partition, plus random extras.
    const int kind = trial % 3;
    const int parts = 1 + static_cast<int>(rng() % 4);
    for (int p = 0; p < parts; ++p) {
      if (kind == 0 && 6 % parts == 0) {
        stored.push_back(boxed(full, {6 / parts * p, 0}, {6 / parts, 10}));
      } else if (kind == 1 && 10 % parts == 0) {
        stored.push_back(boxed(full, {0, 10 / parts * p}, {6, 10 / parts}));
      } else {
        stored.push_back(flat(full, 60 * p / parts, 60 * (p + 1) / parts));
      }
    }
    const int64_t a = rng() % 61, b = rng() % 61;
    stored.push_back(flat(full, std::min(a, b), std::max(a, b)));
    const int64_t r0 = rng() % 6, c0 = rng() % 10;
    const TensorRegion request = trial % 2 ? flat(full, std::min(a, b), std::max(a, b))
                                           : boxed(full, {r0, c0},
                                                   {1 + static_cast<int64_t>(rng() % (6 - r0)),
                                                    1 + static_cast<int64_t>(rng() % (10 - c0))});
    const CoverPlan plan = plan_cover(request, stored);
    ASSERT_FALSE(plan.gap) << trial;
    std::vector<TensorBox> boxes;
    for (const SlicePiece& p : plan.pieces) {
      const std::vector<int64_t> in = elements_of(full, {p.box});
      const std::vector<int64_t> source = elements_of(stored[p.source]);
      for (int64_t e : in) ASSERT_NE(std::find(source.begin(), source.end(), e), source.end());
      boxes.push_back(p.box);
    }
    std::vector<int64_t> expected = elements_of(request);
    std::sort(expected.begin(), expected.end());
    ASSERT_EQ(elements_of(full, boxes), expected) << trial;  // disjoint: no element twice
  }
}

}  // namespace
}  // namespace memento::checkpoint

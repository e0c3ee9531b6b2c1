#include "checkpoint/slice_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace memento::checkpoint {
namespace {

using Pieces = std::vector<SlicePiece>;

TEST(SlicePlan, ExactSliceIsOnePiece) {
  const CoverPlan plan = plan_cover({10, 20}, {{0, 10}, {10, 20}, {20, 30}});
  EXPECT_EQ(plan.pieces, (Pieces{{1, {10, 20}}}));
  EXPECT_FALSE(plan.gap);
}

TEST(SlicePlan, RangeAcrossSlicesTakesEachOverlap) {
  const CoverPlan plan = plan_cover({5, 27}, {{20, 30}, {0, 10}, {10, 20}});  // any order
  EXPECT_EQ(plan.pieces, (Pieces{{1, {5, 10}}, {2, {10, 20}}, {0, {20, 27}}}));
  EXPECT_FALSE(plan.gap);
}

TEST(SlicePlan, ReplicasAreReadOnceAndEmptySlicesIgnored) {
  // Every rank saved the whole tensor: the first is read.
  EXPECT_EQ(plan_cover({0, 8}, {{0, 8}, {0, 8}, {0, 8}}).pieces, (Pieces{{0, {0, 8}}}));
  // Overlaps: the slice reaching furthest wins.
  EXPECT_EQ(plan_cover({0, 10}, {{0, 4}, {0, 6}, {3, 10}, {5, 5}}).pieces,
            (Pieces{{1, {0, 6}}, {2, {6, 10}}}));
  EXPECT_EQ(plan_cover({2, 2}, {}).pieces, Pieces{});
  EXPECT_FALSE(plan_cover({2, 2}, {}).gap);
}

TEST(SlicePlan, GapsAreReportedFromTheirFirstElement) {
  CoverPlan plan = plan_cover({0, 10}, {{0, 3}, {5, 10}, {4, 4}});
  ASSERT_TRUE(plan.gap);
  EXPECT_EQ(*plan.gap, (ElementRange{3, 5}));
  plan = plan_cover({0, 10}, {{0, 3}});
  EXPECT_EQ(*plan.gap, (ElementRange{3, 10}));
  plan = plan_cover({2, 10}, {{5, 7}, {4, 12}});
  EXPECT_EQ(*plan.gap, (ElementRange{2, 4}));
  plan = plan_cover({0, 4}, {});
  EXPECT_EQ(*plan.gap, (ElementRange{0, 4}));
  plan = plan_cover({0, 4}, {{6, 9}});
  EXPECT_EQ(*plan.gap, (ElementRange{0, 4}));
}

}  // namespace
}  // namespace memento::checkpoint

#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace memento::optim {
namespace {

LrSchedule make(ScheduleKind kind, int64_t warmup, int64_t total, double lr = 1e-3,
                double min_lr = 1e-4) {
  LrSchedule s;
  s.kind = kind;
  s.lr = lr;
  s.min_lr = min_lr;
  s.warmup_steps = warmup;
  s.total_steps = total;
  return s;
}

TEST(LrSchedule, NamesAndUnknownName) {
  EXPECT_EQ(schedule_from_name("cosine"), ScheduleKind::kCosine);
  EXPECT_EQ(schedule_from_name("linear"), ScheduleKind::kLinear);
  EXPECT_EQ(schedule_from_name("constant"), ScheduleKind::kConstant);
  try {
    schedule_from_name("Cosine");
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'Cosine'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(schedule_from_name(""), ConfigError);
}

TEST(LrSchedule, WarmupRampsLinearlyToLr) {
  for (ScheduleKind kind :
       {ScheduleKind::kCosine, ScheduleKind::kLinear, ScheduleKind::kConstant}) {
    const LrSchedule s = make(kind, 10, 110);
    EXPECT_DOUBLE_EQ(s.at(0), 1e-4);  // (0 + 1) / 10 * lr: the first update is not at zero
    EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
    EXPECT_DOUBLE_EQ(s.at(9), 1e-3);   // the last warmup step reaches lr
    EXPECT_DOUBLE_EQ(s.at(10), 1e-3);  // and the first decay step starts from it
    for (int64_t i = 1; i < 10; ++i) EXPECT_GT(s.at(i), s.at(i - 1)) << i;
  }
}

TEST(LrSchedule, CosineEndpointsMidpointAndShape) {
  // warmup 10, total 111: the decay runs over steps 10..110, 100 intervals.
  const double lr = 3e-4, min_lr = 3e-5;
  const LrSchedule s = make(ScheduleKind::kCosine, 10, 111, lr, min_lr);
  EXPECT_DOUBLE_EQ(s.at(10), lr);
  EXPECT_DOUBLE_EQ(s.at(110), min_lr);  // the last step reaches min_lr
  EXPECT_NEAR(s.at(60), (lr + min_lr) / 2, 1e-15);
  // A quarter of the way: (1 + cos(pi/4)) / 2 of the range.
  EXPECT_NEAR(s.at(35), min_lr + (lr - min_lr) * (2 + std::numbers::sqrt2) / 4, 1e-15);
  // Symmetric about the midpoint: f(mid - k) + f(mid + k) = lr + min_lr.
  for (int k = 1; k <= 50; ++k) EXPECT_NEAR(s.at(60 - k) + s.at(60 + k), lr + min_lr, 1e-15) << k;
  // Flat at both ends, steepest in the middle.
  EXPECT_LT(s.at(10) - s.at(11), s.at(60) - s.at(61));
  EXPECT_LT(s.at(109) - s.at(110), s.at(60) - s.at(61));
  for (int64_t i = 11; i <= 110; ++i) EXPECT_LT(s.at(i), s.at(i - 1)) << i;
  // Past the end it stays at min_lr.
  EXPECT_DOUBLE_EQ(s.at(111), min_lr);
  EXPECT_DOUBLE_EQ(s.at(100000), min_lr);
}

TEST(LrSchedule, LinearEndpointsAndSteps) {
  const LrSchedule s = make(ScheduleKind::kLinear, 5, 26, 1.0, 0.2);  // 20 decay intervals
  EXPECT_DOUBLE_EQ(s.at(5), 1.0);
  EXPECT_DOUBLE_EQ(s.at(25), 0.2);
  EXPECT_NEAR(s.at(15), 0.6, 1e-15);
  for (int64_t i = 6; i <= 25; ++i) EXPECT_NEAR(s.at(i - 1) - s.at(i), 0.04, 1e-14) << i;
  EXPECT_DOUBLE_EQ(s.at(1000), 0.2);
}

TEST(LrSchedule, ConstantIgnoresMinLr) {
  const LrSchedule s = make(ScheduleKind::kConstant, 3, 10, 2e-3, 1e-5);
  for (int64_t i = 3; i < 50; ++i) EXPECT_EQ(s.at(i), 2e-3) << i;
  const LrSchedule no_warmup = make(ScheduleKind::kConstant, 0, 10, 2e-3, 1e-5);
  EXPECT_EQ(no_warmup.at(0), 2e-3);
}

TEST(LrSchedule, NoWarmupStartsAtLr) {
  const LrSchedule s = make(ScheduleKind::kCosine, 0, 11, 1.0, 0.0);
  EXPECT_DOUBLE_EQ(s.at(0), 1.0);
  EXPECT_NEAR(s.at(5), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
}

TEST(LrSchedule, DegenerateLengthsStayFiniteAndInRange) {
  for (ScheduleKind kind :
       {ScheduleKind::kCosine, ScheduleKind::kLinear, ScheduleKind::kConstant}) {
    for (int64_t warmup : {0, 1, 5}) {
      for (int64_t total : {1, 2, 5, 6, 7}) {
        const LrSchedule s = make(kind, warmup, total, 1.0, 0.1);
        for (int64_t i = 0; i < 12; ++i) {
          const double v = s.at(i);
          ASSERT_TRUE(std::isfinite(v)) << warmup << " " << total << " " << i;
          ASSERT_GT(v, 0.0);
          ASSERT_LE(v, 1.0);
          if (i >= warmup) {
            ASSERT_GE(v, 0.1);
          }
        }
      }
    }
  }
  // One step in all, no warmup: that one update uses lr.
  EXPECT_DOUBLE_EQ(make(ScheduleKind::kCosine, 0, 1, 1.0, 0.1).at(0), 1.0);
}

}  // namespace
}  // namespace memento::optim

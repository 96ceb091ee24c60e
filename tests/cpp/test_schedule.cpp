// Learning-rate schedules: each formula at chosen points, and the plateau rule on scripted
// validation curves, including its state surviving a checkpoint.
#include <gtest/gtest.h>

#include <vector>

#include "convnet/error.h"
#include "convnet/schedule.h"

namespace convnet {
namespace {

TEST(Schedule, ConstantIsOneEverywhere) {
  const Schedule s = Schedule::parse("constant");
  for (double e : {0.0, 0.5, 3.0, 10.0}) EXPECT_DOUBLE_EQ(s.multiplier(e, 10), 1.0);
}

TEST(Schedule, StepDividesEveryNEpochs) {
  const Schedule s = Schedule::parse("step[every=2; factor=0.5]");
  EXPECT_DOUBLE_EQ(s.multiplier(0, 10), 1.0);
  EXPECT_DOUBLE_EQ(s.multiplier(1.99, 10), 1.0);
  EXPECT_DOUBLE_EQ(s.multiplier(2, 10), 0.5);
  EXPECT_DOUBLE_EQ(s.multiplier(5.5, 10), 0.25);
}

TEST(Schedule, ExpFallsByTargetFactorOverTheRun) {
  const Schedule s = Schedule::parse("exp[tgtFactor=100]");
  EXPECT_DOUBLE_EQ(s.multiplier(0, 4), 1.0);
  EXPECT_NEAR(s.multiplier(2, 4), 0.1, 1e-12);
  EXPECT_NEAR(s.multiplier(4, 4), 0.01, 1e-12);
  EXPECT_NEAR(s.multiplier(9, 4), 0.01, 1e-12);  // past the planned end: held at the target
}

TEST(Schedule, DexpHoldsEachLevelForAnEqualPart) {
  const Schedule s = Schedule::parse("dexp[tgtFactor=1000;numSteps=4]");
  const std::vector<std::pair<double, double>> want = {
      {0, 1}, {1.9, 1}, {2, 0.1}, {4.5, 0.01}, {6, 0.001}, {8, 0.001}};
  for (auto [epoch, m] : want) EXPECT_NEAR(s.multiplier(epoch, 8), m, 1e-12) << "epoch " << epoch;
}

TEST(Schedule, LinearGoesFromOneToOneOverTarget) {
  const Schedule s = Schedule::parse("linear[tgtFactor=10]");
  EXPECT_DOUBLE_EQ(s.multiplier(0, 10), 1.0);
  EXPECT_NEAR(s.multiplier(5, 10), 0.55, 1e-12);
  EXPECT_NEAR(s.multiplier(10, 10), 0.1, 1e-12);
}

TEST(Schedule, WarmupRampsAnySchedule) {
  const Schedule s = Schedule::parse("step[every=4;factor=0.1;warmup=2]");
  EXPECT_DOUBLE_EQ(s.multiplier(0, 10), 0.0);
  EXPECT_DOUBLE_EQ(s.multiplier(1, 10), 0.5);
  EXPECT_DOUBLE_EQ(s.multiplier(3, 10), 1.0);
  EXPECT_NEAR(s.multiplier(4, 10), 0.1, 1e-12);
}

// The AlexNet rule: divide by 10 when the validation error stops improving.
TEST(Schedule, PlateauDropsAfterPatienceTestsWithoutImprovement) {
  Schedule s = Schedule::parse("plateau[patience=2;factor=0.1;maxDrops=2]");
  const std::vector<double> errors = {0.50, 0.40, 0.41, 0.40, 0.39, 0.39, 0.38, 0.39, 0.385, 0.30, 0.31, 0.32};
  const std::vector<bool> drop = {false, false, false, true, false, false, false, false, true, false, false, false};
  const std::vector<double> after = {1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01};
  for (size_t i = 0; i < errors.size(); ++i) {
    EXPECT_EQ(s.observe_validation(errors[i]), drop[i]) << "test " << i;
    EXPECT_NEAR(s.multiplier(double(i), 100), after[i], 1e-12) << "test " << i;
  }
}

TEST(Schedule, PlateauThresholdIsRelative) {
  Schedule s = Schedule::parse("plateau[patience=1;threshold=0.1]");
  s.observe_validation(0.5);
  EXPECT_FALSE(s.observe_validation(0.44));  // 12% better: an improvement
  EXPECT_TRUE(s.observe_validation(0.41));   // 7% better than 0.44: not enough
}

TEST(Schedule, PlateauStateRoundTrip) {
  Schedule a = Schedule::parse("plateau[patience=2]");
  for (double e : {0.5, 0.4, 0.45}) a.observe_validation(e);
  Schedule b = Schedule::parse(a.text());
  b.load_state(a.state());
  // Both must now make the same decisions on the same curve.
  for (double e : {0.46, 0.41, 0.39, 0.39, 0.39}) {
    EXPECT_EQ(a.observe_validation(e), b.observe_validation(e));
    EXPECT_DOUBLE_EQ(a.multiplier(1, 10), b.multiplier(1, 10));
  }
  EXPECT_LT(a.multiplier(1, 10), 1.0);  // the curve above did drop the rate
}

TEST(Schedule, OtherTypesIgnoreValidation) {
  Schedule s = Schedule::parse("exp");
  for (double e : {0.5, 0.6, 0.7, 0.8}) EXPECT_FALSE(s.observe_validation(e));
  EXPECT_DOUBLE_EQ(s.multiplier(0, 1), 1.0);
}

TEST(Schedule, TextRoundTrip) {
  for (const char* text : {"constant", "step[every=3]", "dexp[numSteps=5;tgtFactor=20]", "linear"}) {
    const Schedule s = Schedule::parse(text), t = Schedule::parse(s.text());
    EXPECT_EQ(s.text(), t.text());
    for (double e : {0.0, 1.3, 2.7, 4.0}) EXPECT_DOUBLE_EQ(s.multiplier(e, 4), t.multiplier(e, 4));
  }
}

TEST(Schedule, BadTextNamesTheProblem) {
  auto message = [](const std::string& text) {
    try {
      Schedule::parse(text);
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("cosine").find("unknown learning-rate schedule 'cosine'"), std::string::npos);
  EXPECT_NE(message("step[evry=2]").find("unknown key 'evry'"), std::string::npos);
  EXPECT_NE(message("step[every=two]").find("every='two' is not a number"), std::string::npos);
  EXPECT_NE(message("step[every=2").find("missing ']'"), std::string::npos);
  EXPECT_NE(message("dexp[numSteps=1]").find("numSteps=1 must be an integer >= 2"), std::string::npos);
  EXPECT_NE(message("exp[tgtFactor=0]").find("tgtFactor=0 must be > 0"), std::string::npos);
  EXPECT_NE(message("step[every]").find("is not key=value"), std::string::npos);
}

}  // namespace
}  // namespace convnet

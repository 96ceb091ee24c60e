// sum_squares (the trainer's gradient norm) against a float64 reference, and the same result
// for any number of threads.
#include <gtest/gtest.h>
#include <omp.h>

#include "convnet/ops.h"
#include "test_util.h"

namespace convnet {
namespace {

TEST(SumSquares, MatchesFloat64ReferenceForAnySize) {
  uint32_t seed = 40;
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(16384), int64_t(16385), int64_t(100003)}) {
    const auto v = testing::random_vector(size_t(n), ++seed, -3.f, 3.f);
    Tensor t({int(std::max<int64_t>(n, 1))}, Device::cpu());
    if (n == 0) t = Tensor({0}, Device::cpu());
    if (n > 0) t.copy_from_host(v.data());
    double want = 0;
    for (float x : v) want += double(x) * double(x);
    EXPECT_NEAR(sum_squares(t), want, 1e-12 * std::max(want, 1.0)) << "n = " << n;
  }
}

TEST(SumSquares, SameBitsForAnyThreadCount) {
  const auto v = testing::random_vector(300000, 77);
  Tensor t({300000}, Device::cpu());
  t.copy_from_host(v.data());
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = sum_squares(t);
  omp_set_num_threads(2);
  const double two = sum_squares(t);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, two);
}

TEST(SumSquares, OfSeveralTensorsEqualsTheSumOfEach) {
  std::vector<Tensor> ts;
  uint32_t seed = 90;
  for (int n : {5, 16385, 1, 40000}) {
    const auto v = testing::random_vector(size_t(n), ++seed, -2.f, 2.f);
    ts.emplace_back(Shape{n}, Device::cpu());
    ts.back().copy_from_host(v.data());
  }
  std::vector<const Tensor*> all;
  double each = 0;
  for (const Tensor& t : ts) {
    all.push_back(&t);
    each += sum_squares(t);
  }
  EXPECT_EQ(sum_squares(all), each);
  EXPECT_EQ(sum_squares(std::vector<const Tensor*>{}), 0.0);
}

TEST(SumSquares, OfSeveralTensorsRefusesMixedDevices) {
  Tensor a({3}, Device::cpu(0)), b({3}, Device::cpu(1));
  a.fill(1.f);
  b.fill(1.f);
  try {
    sum_squares(std::vector<const Tensor*>{&a, &b});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace convnet

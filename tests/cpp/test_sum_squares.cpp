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

}  // namespace
}  // namespace convnet

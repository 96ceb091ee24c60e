// cpu::gemm against a float64 reference, on shapes that take each of its paths: one call,
// C split by columns, C split by rows, and the split reduction (k much longer than m and n);
// with every transpose, alpha, beta, and leading dimensions wider than the matrices. And the
// same bits for 1, 2, 3 and 5 threads on each path (a run may resume with another --threads).
#include <omp.h>

#include <cstring>

#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

struct GemmCase {
  int m, n, k;
  bool ta, tb;
  float alpha, beta;
};

class GemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, MatchesFloat64Reference) {
  const GemmCase c = GetParam();
  // Stored shapes: op(A) is m x k, so A is k x m when transposed; padded leading dimensions.
  const int a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
  const int b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const int lda = a_cols + 3, ldb = b_cols + 5, ldc = c.n + 7;
  auto a = random_vector(size_t(a_rows) * lda, 1);
  auto b = random_vector(size_t(b_rows) * ldb, 2);
  auto cm = random_vector(size_t(c.m) * ldc, 3);
  std::vector<double> want(size_t(c.m) * c.n);
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      double s = 0;
      for (int p = 0; p < c.k; ++p) {
        double av = c.ta ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p];
        double bv = c.tb ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j];
        s += av * bv;
      }
      want[size_t(i) * c.n + j] = c.alpha * s + c.beta * cm[size_t(i) * ldc + j];
    }
  const auto before = cm;
  cpu::gemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, cm.data(), ldc);
  std::vector<float> got(size_t(c.m) * c.n);
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) got[size_t(i) * c.n + j] = cm[size_t(i) * ldc + j];
  expect_close(got, want, 1e-4, 1e-3 * std::sqrt(double(c.k)) * 1e-1, "gemm");
  // The padding between rows of C is never touched.
  for (int i = 0; i < c.m; ++i)
    for (int j = c.n; j < ldc; ++j) ASSERT_EQ(cm[size_t(i) * ldc + j], before[size_t(i) * ldc + j]);
}

TEST_P(GemmTest, SameBitsForAnyThreadCount) {
  const GemmCase c = GetParam();
  const int lda = c.ta ? c.m : c.k, ldb = c.tb ? c.k : c.n;
  const auto a = random_vector(size_t(c.m) * c.k, 4);
  const auto b = random_vector(size_t(c.k) * c.n, 5);
  const auto c0 = random_vector(size_t(c.m) * c.n, 6);
  const int keep = omp_get_max_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3, 5}) {
    omp_set_num_threads(threads);
    std::vector<float> out = c0;
    cpu::gemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, out.data(), c.n);
    results.push_back(std::move(out));
  }
  omp_set_num_threads(keep);
  for (size_t t = 1; t < results.size(); ++t)
    EXPECT_EQ(std::memcmp(results[t].data(), results[0].data(), results[0].size() * sizeof(float)), 0)
        << "thread count " << (t == 1 ? 2 : t == 2 ? 3 : 5) << " gives other bits than 1 thread";
}

INSTANTIATE_TEST_SUITE_P(
    Paths, GemmTest,
    ::testing::Values(GemmCase{7, 9, 5, false, false, 1.f, 0.f},           // small: one call
                      GemmCase{48, 3001, 40, false, false, 1.f, 0.f},      // split by columns
                      GemmCase{48, 3001, 40, true, false, 0.5f, 1.f},
                      GemmCase{2999, 33, 70, false, true, 1.f, 1.f},       // split by rows
                      GemmCase{2999, 33, 70, true, true, -1.f, 0.f},
                      GemmCase{24, 37, 20001, false, true, 1.f, 0.f},      // split reduction (dW)
                      GemmCase{24, 37, 20001, true, false, 1.f, 1.f},
                      GemmCase{37, 24, 20001, true, true, 0.25f, 1.f},
                      GemmCase{37, 24, 20001, false, false, 1.f, 0.f}));

}  // namespace
}  // namespace convnet::testing

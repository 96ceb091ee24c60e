// CPU SGD update (the AlexNet paper's momentum + weight decay rule) against a hand computation
// over two steps (test_solver.cpp checks it against float64 on random inputs, with Nesterov),
// and the elementwise helpers it sits beside (axpby, fill, copy, transpose).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::random_vector;
using testing::to_double;

TEST(CpuSgd, TwoStepsByHand) {
  // w = 1, v = 0, lr = 0.1, momentum 0.9, decay 0.1.
  // step 1, grad 0.5: v = -0.1*0.1*1 - 0.1*0.5 = -0.06;               w = 0.94
  // step 2, grad 0.2: v = 0.9*-0.06 - 0.01*0.94 - 0.02 = -0.0834;      w = 0.8566
  std::vector<float> w = {1.f}, v = {0.f};
  const float g1 = 0.5f, g2 = 0.2f;
  cpu::sgd_update(w.data(), &g1, v.data(), 1, 0.1f, 0.9f, 0.1f);
  EXPECT_NEAR(v[0], -0.06, 1e-7);
  EXPECT_NEAR(w[0], 0.94, 1e-7);
  cpu::sgd_update(w.data(), &g2, v.data(), 1, 0.1f, 0.9f, 0.1f);
  EXPECT_NEAR(v[0], -0.0834, 1e-7);
  EXPECT_NEAR(w[0], 0.8566, 1e-7);
}

TEST(CpuElementwise, Axpby) {
  for (size_t n : {size_t(1), size_t(9), size_t(70001)}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto src = random_vector(n, 10 + uint32_t(n));
    auto base = random_vector(n, 20 + uint32_t(n), -3.f, 3.f);
    const float scale = -0.75f;
    std::vector<double> want(n), want_acc(n);
    for (size_t i = 0; i < n; ++i) {
      want[i] = double(scale) * src[i];
      want_acc[i] = base[i] + want[i];
    }
    std::vector<float> dst(n, std::nanf(""));  // garbage: must not be read
    cpu::axpby(scale, src.data(), dst.data(), int64_t(n), false);
    expect_close(dst, want, 1e-6, 0, "axpby");
    auto acc = base;
    cpu::axpby(scale, src.data(), acc.data(), int64_t(n), true);
    expect_close(acc, want_acc, 1e-6, 1e-7, "axpby accumulate");
  }
}

TEST(CpuElementwise, FillAndCopy) {
  for (size_t n : {size_t(1), size_t(9), size_t(70001), size_t(200003)}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    std::vector<float> dst(n, std::nanf(""));
    cpu::fill(dst.data(), int64_t(n), 2.5f);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(dst[i], 2.5f) << i;
    auto src = random_vector(n, 30 + uint32_t(n));
    cpu::copy(src.data(), dst.data(), int64_t(n));
    ASSERT_EQ(0, std::memcmp(src.data(), dst.data(), n * sizeof(float)));
  }
}

TEST(CpuElementwise, TransposeMovesEveryElementOnce) {
  // Shapes below, at and across the 64 x 64 tile, one large enough to run threaded, and the
  // NCHW -> CHWN shape of a small batch (N x CHW).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {1, 7}, {7, 1}, {64, 64},
                                                           {65, 63}, {130, 257}, {128, 3 * 17 * 19}};
  for (const auto& [rows, cols] : shapes) {
    SCOPED_TRACE("rows=" + std::to_string(rows) + " cols=" + std::to_string(cols));
    const auto src = random_vector(size_t(rows * cols), 40 + uint32_t(rows + cols));
    std::vector<float> dst(src.size(), std::nanf(""));
    cpu::transpose(src.data(), rows, cols, dst.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(dst[size_t(c * rows + r)], src[size_t(r * cols + c)]) << r << ", " << c;
    std::vector<float> back(src.size(), std::nanf(""));
    cpu::transpose(dst.data(), cols, rows, back.data());
    ASSERT_EQ(0, std::memcmp(src.data(), back.data(), src.size() * sizeof(float)));
  }
}

}  // namespace
}  // namespace convnet

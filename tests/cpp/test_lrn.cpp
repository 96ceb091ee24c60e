// Tests of the CPU cross-map LRN (cpu/lrn.cpp): forward against a float64 reference written from
// the AlexNet paper's formula, backward against central finite differences of that reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "convnet/error.h"
#include "convnet/ops.h"
#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

struct LrnCase {
  int c, h, w, n;
  LrnParams p;
  float scale;  // inputs are uniform in [-scale, scale)
  int64_t inner() const { return int64_t(h) * w * n; }
  size_t numel() const { return size_t(c) * inner(); }
  std::string name() const {
    return "C=" + std::to_string(c) + " H=" + std::to_string(h) + " W=" + std::to_string(w) +
           " N=" + std::to_string(n) + " size=" + std::to_string(p.size) +
           " k=" + std::to_string(p.k) + " alpha=" + std::to_string(p.alpha) +
           " beta=" + std::to_string(p.beta);
  }
};

LrnParams params(int size, float k, float alpha, float beta) {
  LrnParams p;
  p.size = size;
  p.k = k;
  p.alpha = alpha;
  p.beta = beta;
  return p;
}

// Small shapes, cheap enough for finite differences over every element. The large alphas make
// the normalisation a big effect, so a wrong window or alpha/size would show.
std::vector<LrnCase> small_cases() {
  return {
      {7, 3, 2, 3, params(5, 1.0f, 0.5f, 0.75f), 2.0f},   // odd size, beta = 0.75 fast path
      {3, 2, 3, 1, params(5, 1.0f, 0.5f, 0.75f), 2.0f},   // C < size, batch 1
      {6, 2, 2, 2, params(4, 1.5f, 0.3f, 0.6f), 2.0f},    // even size, general beta
      {5, 3, 1, 4, params(2, 0.5f, 1.0f, 1.0f), 1.5f},    // even size 2, beta = 1
      {4, 1, 3, 2, params(1, 2.0f, 0.7f, 0.5f), 2.0f},    // size 1, beta = 0.5
      {2, 2, 2, 3, params(6, 1.0f, 0.8f, 0.9f), 1.5f},    // C much smaller than an even size
      {9, 2, 1, 3, params(3, 1.0f, 0.4f, 0.75f), 2.0f},   // size 3, odd batch
      {8, 2, 2, 2, params(5, 2.0f, 1e-4f, 0.75f), 40.f},  // AlexNet's k, alpha, beta
      // inner = 1040 spans more than one 1024-element block of the forward and backward passes.
      {3, 2, 4, 130, params(5, 1.0f, 0.5f, 0.75f), 2.0f},
  };
}

struct LrnRef {
  std::vector<double> y, denom;
};

// Straight from the formula, in double, naive loops over the CHWN indices.
LrnRef ref_forward(const std::vector<double>& x, const LrnCase& t) {
  const int C = t.c;
  const int64_t inner = t.inner();
  const LrnParams& p = t.p;
  LrnRef r{std::vector<double>(x.size()), std::vector<double>(x.size())};
  for (int i = 0; i < C; ++i)
    for (int64_t e = 0; e < inner; ++e) {
      double s = 0;
      for (int j = i - p.size / 2; j <= i - p.size / 2 + p.size - 1; ++j)
        if (j >= 0 && j < C) s += x[j * inner + e] * x[j * inner + e];
      const double d = double(p.k) + double(p.alpha) * s;
      r.denom[i * inner + e] = d;
      r.y[i * inner + e] = x[i * inner + e] * std::pow(d, -double(p.beta));
    }
  return r;
}

// Analytic gradient in double, straight from the brief's formula:
// dx_j = dy_j d_j^-beta - 2 alpha beta a_j sum_{i : j in window(i)} dy_i a_i d_i^(-beta-1).
// Checked against finite differences below, then used where finite differences are too slow.
std::vector<double> ref_backward(const std::vector<double>& x, const std::vector<double>& dy,
                                 const LrnCase& t) {
  const int C = t.c;
  const int64_t inner = t.inner();
  const LrnParams& p = t.p;
  const double alpha = p.alpha, beta = p.beta;
  const std::vector<double> d = ref_forward(x, t).denom;
  std::vector<double> dx(x.size());
  for (int j = 0; j < C; ++j)
    for (int64_t e = 0; e < inner; ++e) {
      double s = 0;
      for (int i = 0; i < C; ++i) {
        const int lo = i - p.size / 2, hi = lo + p.size - 1;
        if (j < lo || j > hi) continue;
        const int64_t ii = i * inner + e;
        s += dy[ii] * x[ii] * std::pow(d[ii], -beta - 1);
      }
      const int64_t jj = j * inner + e;
      dx[jj] = dy[jj] * std::pow(d[jj], -beta) - 2 * alpha * beta * x[jj] * s;
    }
  return dx;
}

struct CpuOut {
  std::vector<float> y, denom;
};

CpuOut cpu_forward(const std::vector<float>& x, const LrnCase& t) {
  CpuOut o{std::vector<float>(x.size()), std::vector<float>(x.size())};
  cpu::lrn_forward(x.data(), o.y.data(), o.denom.data(), t.c, t.inner(), t.p);
  return o;
}

// Runs the CPU backward with upstream gradient dy onto dx (overwritten or accumulated).
void cpu_backward(const std::vector<float>& x, const std::vector<float>& dy, std::vector<float>& dx,
                  const LrnCase& t, bool accumulate) {
  const CpuOut f = cpu_forward(x, t);
  cpu::lrn_backward(x.data(), f.y.data(), f.denom.data(), dy.data(), dx.data(), t.c, t.inner(),
                    t.p, accumulate);
}

std::vector<double> fd_gradient(const std::vector<float>& x, const std::vector<float>& w,
                                const LrnCase& t) {
  const std::vector<double> wd = to_double(w);
  return numeric_gradient(
      [&](const std::vector<double>& xd) { return weighted_sum(ref_forward(xd, t).y, wd); },
      to_double(x));
}

TEST(LrnCpu, HandComputedValues) {
  // x = {1, 2, 3} over three channels, k = 1, alpha = 1, beta = 1, so y = x / (1 + sum a^2).
  const std::vector<float> x = {1, 2, 3};
  std::vector<float> y(3), d(3);
  // size 3: windows {0,1}, {0,1,2}, {1,2}: the paper's alpha, not alpha / size.
  cpu::lrn_forward(x.data(), y.data(), d.data(), 3, 1, params(3, 1, 1, 1));
  expect_close(d, {6, 15, 14}, 1e-6, 0, "size 3 denom");
  expect_close(y, {1.0 / 6, 2.0 / 15, 3.0 / 14}, 1e-6, 0, "size 3 y");
  // size 2: window(i) = [i - 1, i]: {0}, {0,1}, {1,2}.
  cpu::lrn_forward(x.data(), y.data(), d.data(), 3, 1, params(2, 1, 1, 1));
  expect_close(d, {2, 6, 14}, 1e-6, 0, "size 2 denom");
  // size 4: window(i) = [i - 2, i + 1]: {0,1}, {0,1,2}, {0,1,2}.
  cpu::lrn_forward(x.data(), y.data(), d.data(), 3, 1, params(4, 1, 1, 1));
  expect_close(d, {6, 15, 15}, 1e-6, 0, "size 4 denom");
  // beta = 0.75 and k = 2: y = x * d^-0.75.
  cpu::lrn_forward(x.data(), y.data(), d.data(), 3, 1, params(3, 2, 0.5f, 0.75f));
  expect_close(y, {1 * std::pow(4.5, -0.75), 2 * std::pow(9.0, -0.75), 3 * std::pow(8.5, -0.75)},
               1e-6, 0, "beta 0.75 y");
}

TEST(LrnCpu, PowerPathsAccurateOverWideRange) {
  // d^-beta has fast paths for beta = 0.75, 0.5 and 1. With size 1, d = k + alpha * x^2 runs
  // over 1e-3 .. 1e12 here; the tolerance (a few float ulp) is tighter than elsewhere so that
  // a slightly inaccurate fast path would fail.
  const int64_t inner = 4096;
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> expo(-3.0, 6.0);
  std::vector<float> x(inner);
  for (int64_t i = 0; i < inner; ++i) x[i] = float((i % 2 ? -1 : 1) * std::pow(10.0, expo(rng)));
  for (float beta : {0.75f, 0.5f, 1.0f, 0.6f}) {
    const LrnCase t{1, 1, 1, int(inner), params(1, 1e-3f, 1.0f, beta), 0.0f};
    SCOPED_TRACE(t.name());
    const CpuOut got = cpu_forward(x, t);
    const LrnRef want = ref_forward(to_double(x), t);
    expect_close(got.denom, want.denom, 1e-6, 0, "denom");
    expect_close(got.y, want.y, 2e-6, 0, "y");
  }
}

TEST(LrnCpu, ForwardMatchesFloat64Reference) {
  uint32_t seed = 100;
  for (const LrnCase& t : small_cases()) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const CpuOut got = cpu_forward(x, t);
    const LrnRef want = ref_forward(to_double(x), t);
    expect_close(got.y, want.y, 1e-5, 1e-7, "y");
    expect_close(got.denom, want.denom, 1e-5, 0, "denom");
  }
}

TEST(LrnCpu, BackwardMatchesFiniteDifferences) {
  uint32_t seed = 200;
  for (const LrnCase& t : small_cases()) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const std::vector<float> w = random_vector(t.numel(), ++seed);
    const std::vector<double> fd = fd_gradient(x, w, t);
    // The float64 analytic reference must agree with finite differences too (it is reused for
    // the large shapes below).
    const std::vector<double> analytic = ref_backward(to_double(x), to_double(w), t);
    for (size_t i = 0; i < fd.size(); ++i)
      ASSERT_NEAR(analytic[i], fd[i], 1e-6 + 1e-6 * std::fabs(fd[i])) << "reference, element " << i;
    // Overwrite mode must not read dx: fill it with NaN.
    std::vector<float> dx(t.numel(), std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, w, dx, t, false);
    expect_close(dx, fd, 1e-4, 1e-5, "dx");
  }
}

TEST(LrnCpu, BackwardAccumulateAddsOntoDx) {
  uint32_t seed = 300;
  for (const LrnCase& t : small_cases()) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const std::vector<float> w = random_vector(t.numel(), ++seed);
    const std::vector<float> dx0 = random_vector(t.numel(), ++seed, -3.f, 3.f);
    const std::vector<double> fd = fd_gradient(x, w, t);
    std::vector<double> want(fd.size());
    for (size_t i = 0; i < fd.size(); ++i) want[i] = dx0[i] + fd[i];
    std::vector<float> dx = dx0;
    cpu_backward(x, w, dx, t, true);
    expect_close(dx, want, 1e-4, 1e-5, "dx accumulated");
  }
}

TEST(LrnCpu, LargeShapesMatchReference) {
  // Many channels shrink the backward block (so several blocks and a partial one run in
  // parallel); AlexNet-like parameters; and a general beta.
  const std::vector<LrnCase> cases = {
      {70, 2, 2, 125, params(5, 1.0f, 0.2f, 0.75f), 2.0f},
      {96, 5, 5, 16, params(5, 2.0f, 1e-4f, 0.75f), 40.f},
      {33, 3, 7, 11, params(4, 1.0f, 0.3f, 0.65f), 2.0f},
  };
  uint32_t seed = 400;
  for (const LrnCase& t : cases) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const std::vector<float> w = random_vector(t.numel(), ++seed);
    const CpuOut got = cpu_forward(x, t);
    const LrnRef want = ref_forward(to_double(x), t);
    expect_close(got.y, want.y, 1e-5, 1e-7, "y");
    expect_close(got.denom, want.denom, 1e-5, 0, "denom");
    std::vector<float> dx(t.numel(), std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, w, dx, t, false);
    expect_close(dx, ref_backward(to_double(x), to_double(w), t), 1e-4, 1e-5, "dx");
  }
}

// The op refuses in-place use (every output reads a window of inputs), on every backend.
TEST(LrnOp, RefusesOutputsSharingTheInputsMemory) {
  Tensor x({4, 2, 2, 3}, Device::cpu()), y(x.shape(), Device::cpu()), d(x.shape(), Device::cpu());
  x.fill(1.f);
  EXPECT_THROW(lrn_forward(x, x, d, LrnParams{}), ValueError);
  EXPECT_THROW(lrn_forward(x, y, x, LrnParams{}), ValueError);
  lrn_forward(x, y, d, LrnParams{});
  Tensor dy(x.shape(), Device::cpu());
  dy.fill(1.f);
  EXPECT_THROW(lrn_backward(x, y, d, dy, dy, LrnParams{}, false), ValueError);
  Tensor dx(x.shape(), Device::cpu());
  lrn_backward(x, y, d, dy, dx, LrnParams{}, false);
}

}  // namespace
}  // namespace convnet

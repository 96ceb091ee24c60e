// Tests of the CPU max and average pooling (cpu/pool.cpp): forward against a float64 reference,
// backward against central finite differences, the first-maximum rule for ties, ceil/floor
// output sizes, padding (both divisors of average pooling), and the accumulate flag.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "convnet/error.h"
#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

struct PoolCase {
  PoolType type;
  int c, h, w, n, size, stride;
  bool ceil_mode;
  int want_oh, want_ow;  // output size worked out by hand
  int pad = 0;
  bool count_pad = true;
};

PoolGeometry geometry(const PoolCase& t) {
  PoolGeometry g;
  g.type = t.type;
  g.channels = t.c;
  g.height = t.h;
  g.width = t.w;
  g.batch = t.n;
  g.size = t.size;
  g.stride = t.stride;
  g.ceil_mode = t.ceil_mode;
  g.padding = t.pad;
  g.count_padding = t.count_pad;
  g.finish("test");
  return g;
}

std::string name(const PoolCase& t) {
  return std::string(t.type == PoolType::Max ? "max" : "avg") + " C=" + std::to_string(t.c) +
         " H=" + std::to_string(t.h) + " W=" + std::to_string(t.w) + " N=" + std::to_string(t.n) +
         " size=" + std::to_string(t.size) + " stride=" + std::to_string(t.stride) +
         (t.ceil_mode ? " ceil" : " floor") + (t.pad ? " pad=" + std::to_string(t.pad) : "") +
         (t.count_pad ? "" : " without padded cells");
}

size_t in_numel(const PoolGeometry& g) { return size_t(g.channels) * g.height * g.width * g.batch; }
size_t out_numel(const PoolGeometry& g) { return size_t(g.channels) * g.out_h * g.out_w * g.batch; }

// Small shapes for finite differences; every type paired with floor and ceil, overlapping and
// non-overlapping windows, windows clipped at the edge, and batch 1.
std::vector<PoolCase> cases() {
  std::vector<PoolCase> out;
  for (PoolType type : {PoolType::Max, PoolType::Avg}) {
    const std::vector<PoolCase> shapes = {
        {type, 3, 7, 9, 4, 3, 2, false, 3, 4},  // overlapping 3/2, exact fit in H
        {type, 2, 8, 6, 3, 3, 2, false, 3, 2},  // floor drops the last row and column
        {type, 2, 8, 6, 3, 3, 2, true, 4, 3},   // ceil keeps them, clipped
        {type, 2, 7, 7, 2, 3, 3, true, 3, 3},   // ceil: last window is a single row/column
        {type, 2, 7, 7, 2, 3, 3, false, 2, 2},
        {type, 2, 5, 5, 1, 2, 2, false, 2, 2},  // batch 1
        {type, 1, 5, 5, 1, 2, 2, true, 3, 3},   // batch 1, ceil, 1-element corner window
        {type, 2, 8, 7, 2, 2, 3, false, 3, 2},  // stride > size: gaps between windows
        {type, 2, 8, 7, 2, 2, 3, true, 3, 3},
        {type, 2, 5, 4, 2, 3, 1, false, 3, 2},  // stride 1, heavy overlap
        {type, 3, 4, 4, 3, 4, 1, true, 1, 1},   // global pooling
        {type, 2, 5, 6, 3, 1, 2, true, 3, 3},   // size 1
        {type, 2, 7, 7, 2, 3, 2, false, 4, 4, 1},         // padding 1: (7 + 2 - 3) / 2 + 1
        {type, 2, 7, 7, 2, 3, 2, false, 4, 4, 1, false},  // the average over the input's cells only
        {type, 2, 6, 5, 3, 3, 2, true, 4, 3, 1},          // ceil with padding
        {type, 2, 5, 5, 2, 2, 2, true, 3, 3, 1},          // ceil: a 4th window would start in the right padding
        {type, 1, 4, 4, 2, 4, 1, false, 5, 5, 2, false},  // padding size/2: corner windows hold one cell
    };
    out.insert(out.end(), shapes.begin(), shapes.end());
  }
  return out;
}

// Window [lo, hi) of output position o in the padded input (`in` plus `padding` cells on each
// side), clipped to it.
void window(int o, const PoolGeometry& g, int in, int& lo, int& hi) {
  lo = o * g.stride;
  hi = std::min(lo + g.size, in + 2 * g.padding);
}

// The input padded by definition: padded cells are -inf for max pooling (never the maximum) and
// 0 for average pooling, which divides by the window's cells, padded ones counted or not.
struct Padded {
  const std::vector<double>& x;
  const PoolGeometry& g;
  bool inside(int py, int px) const {
    const int iy = py - g.padding, ix = px - g.padding;
    return iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
  }
  size_t at(int c, int py, int px, int n) const {
    return ((size_t(c) * g.height + (py - g.padding)) * g.width + (px - g.padding)) * g.batch + n;
  }
  double value(int c, int py, int px, int n) const {
    if (inside(py, px)) return x[at(c, py, px, n)];
    return g.type == PoolType::Max ? -std::numeric_limits<double>::infinity() : 0.0;
  }
  double divisor(int y0, int y1, int x0, int x1) const {
    if (g.count_padding) return double((y1 - y0) * (x1 - x0));
    int real = 0;
    for (int py = y0; py < y1; ++py)
      for (int px = x0; px < x1; ++px) real += inside(py, px);
    return real;
  }
};

// Straight from the definition, in double, naive loops over the CHWN indices.
std::vector<double> ref_forward(const std::vector<double>& x, const PoolGeometry& g) {
  const int H = g.height, W = g.width, N = g.batch;
  const Padded p{x, g};
  std::vector<double> y(out_numel(g));
  for (int c = 0; c < g.channels; ++c)
    for (int oy = 0; oy < g.out_h; ++oy)
      for (int ox = 0; ox < g.out_w; ++ox)
        for (int n = 0; n < N; ++n) {
          int y0, y1, x0, x1;
          window(oy, g, H, y0, y1);
          window(ox, g, W, x0, x1);
          double acc = g.type == PoolType::Max ? -std::numeric_limits<double>::infinity() : 0.0;
          for (int py = y0; py < y1; ++py)
            for (int px = x0; px < x1; ++px) {
              const double v = p.value(c, py, px, n);
              acc = g.type == PoolType::Max ? std::max(acc, v) : acc + v;
            }
          if (g.type == PoolType::Avg) acc /= p.divisor(y0, y1, x0, x1);
          y[((size_t(c) * g.out_h + oy) * g.out_w + ox) * N + n] = acc;
        }
  return y;
}

// The gradient by the rules, in double: average spreads dy over the clipped window; max routes
// dy to the first maximal input in row-major (ky, kx) order. Used where inputs tie (finite
// differences are undefined there) and for shapes too big for finite differences.
std::vector<double> ref_backward(const std::vector<double>& x, const std::vector<double>& dy,
                                 const PoolGeometry& g) {
  const int H = g.height, W = g.width, N = g.batch;
  const Padded p{x, g};
  std::vector<double> dx(x.size(), 0.0);
  for (int c = 0; c < g.channels; ++c)
    for (int oy = 0; oy < g.out_h; ++oy)
      for (int ox = 0; ox < g.out_w; ++ox)
        for (int n = 0; n < N; ++n) {
          int y0, y1, x0, x1;
          window(oy, g, H, y0, y1);
          window(ox, g, W, x0, x1);
          const double grad = dy[((size_t(c) * g.out_h + oy) * g.out_w + ox) * N + n];
          if (g.type == PoolType::Avg) {
            for (int py = y0; py < y1; ++py)
              for (int px = x0; px < x1; ++px)
                if (p.inside(py, px)) dx[p.at(c, py, px, n)] += grad / p.divisor(y0, y1, x0, x1);
          } else {  // the first of the window's maxima in row-major order (padding never wins)
            int by = y0, bx = x0;
            for (int py = y0; py < y1; ++py)
              for (int px = x0; px < x1; ++px)
                if (p.value(c, py, px, n) > p.value(c, by, bx, n)) by = py, bx = px;
            dx[p.at(c, by, bx, n)] += grad;
          }
        }
  return dx;
}

// Inputs for finite differences. Max pooling gets a shuffled permutation scaled by 0.01: all
// values distinct and far apart relative to the step h, so no argmax flips. All negative, so a
// max that starts from 0 would be caught.
std::vector<float> fd_input(const PoolGeometry& g, uint32_t seed) {
  if (g.type == PoolType::Avg) return random_vector(in_numel(g), seed);
  std::vector<float> x(in_numel(g));
  std::iota(x.begin(), x.end(), 1.0f);
  std::shuffle(x.begin(), x.end(), std::mt19937(seed));
  for (float& v : x) v *= -0.01f;
  return x;
}

std::vector<float> cpu_forward(const std::vector<float>& x, const PoolGeometry& g) {
  std::vector<float> y(out_numel(g));
  cpu::pool_forward(x.data(), y.data(), g);
  return y;
}

void cpu_backward(const std::vector<float>& x, const std::vector<float>& dy, std::vector<float>& dx,
                  const PoolGeometry& g, bool accumulate) {
  const std::vector<float> y = cpu_forward(x, g);
  cpu::pool_backward(x.data(), y.data(), dy.data(), dx.data(), g, accumulate);
}

std::vector<double> fd_gradient(const std::vector<float>& x, const std::vector<float>& w,
                                const PoolGeometry& g) {
  const std::vector<double> wd = to_double(w);
  return numeric_gradient(
      [&](const std::vector<double>& xd) { return weighted_sum(ref_forward(xd, g), wd); },
      to_double(x));
}

TEST(PoolCpu, OutputSizes) {
  for (const PoolCase& t : cases()) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    EXPECT_EQ(g.out_h, t.want_oh);
    EXPECT_EQ(g.out_w, t.want_ow);
  }
}

TEST(PoolCpu, ForwardMatchesFloat64Reference) {
  uint32_t seed = 500;
  for (const PoolCase& t : cases()) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    const std::vector<float> x = random_vector(in_numel(g), ++seed, -2.f, 2.f);
    expect_close(cpu_forward(x, g), ref_forward(to_double(x), g), 1e-5, 1e-6, "y");
  }
}

TEST(PoolCpu, HandComputedValues) {
  // One channel, 3x3 input, batch 2 interleaved: case 0 holds 1..9, case 1 holds -(1..9).
  PoolGeometry g = geometry({PoolType::Avg, 1, 3, 3, 2, 2, 2, true, 2, 2});
  std::vector<float> x(18);
  for (int i = 0; i < 9; ++i) {
    x[i * 2] = float(i + 1);
    x[i * 2 + 1] = -float(i + 1);
  }
  // Ceil-mode windows: {1,2,4,5}, {3,6}, {7,8}, {9}; average divides by the clipped count.
  expect_close(cpu_forward(x, g), {3, -3, 4.5, -4.5, 7.5, -7.5, 9, -9}, 1e-6, 0, "avg");
  g.type = PoolType::Max;
  expect_close(cpu_forward(x, g), {5, -1, 6, -3, 8, -7, 9, -9}, 1e-6, 0, "max");
}

// Padding 1 around a 2x2 input, windows 2x2 at stride 1 (PyTorch: avg_pool2d(x, 2, 1, 1) and
// max_pool2d(x, 2, 1, 1)). All inputs negative, so a padded zero would win a max if it could.
TEST(PoolCpu, PaddingHandComputedValues) {
  PoolGeometry g = geometry({PoolType::Avg, 1, 2, 2, 1, 2, 1, false, 3, 3, 1});
  const std::vector<float> x = {-1, -2, -3, -4};
  expect_close(cpu_forward(x, g), {-0.25, -0.75, -0.5, -1, -2.5, -1.5, -0.75, -1.75, -1}, 1e-6, 0,
               "avg counting padded cells");
  g.count_padding = false;
  expect_close(cpu_forward(x, g), {-1, -1.5, -2, -2, -2.5, -3, -3, -3.5, -4}, 1e-6, 0,
               "avg over the input's cells");
  g.type = PoolType::Max;
  expect_close(cpu_forward(x, g), {-1, -1, -2, -1, -1, -2, -3, -3, -4}, 0, 0, "max");
}

TEST(PoolCpu, BadPaddingIsNamed) {
  PoolGeometry g = geometry({PoolType::Max, 1, 5, 5, 1, 3, 2, false, 2, 2});
  g.padding = 2;
  try {
    g.finish("layer 'p'");
    FAIL() << "padding 2 for size 3 was accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'p': pool padding must be in [0, size/2] (1 for size 3), got 2"),
              std::string::npos) << e.what();
  }
}

TEST(PoolCpu, BackwardMatchesFiniteDifferences) {
  uint32_t seed = 600;
  for (const PoolCase& t : cases()) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    const std::vector<float> x = fd_input(g, ++seed);
    const std::vector<float> w = random_vector(out_numel(g), ++seed);
    const std::vector<double> fd = fd_gradient(x, w, g);
    // Overwrite mode must not read dx: fill it with NaN.
    std::vector<float> dx(in_numel(g), std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, w, dx, g, false);
    expect_close(dx, fd, 1e-4, 1e-6, "dx");
  }
}

TEST(PoolCpu, BackwardAccumulateAddsOntoDx) {
  uint32_t seed = 700;
  for (const PoolCase& t : cases()) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    const std::vector<float> x = fd_input(g, ++seed);
    const std::vector<float> w = random_vector(out_numel(g), ++seed);
    const std::vector<float> dx0 = random_vector(in_numel(g), ++seed, -3.f, 3.f);
    const std::vector<double> fd = fd_gradient(x, w, g);
    std::vector<double> want(fd.size());
    for (size_t i = 0; i < fd.size(); ++i) want[i] = dx0[i] + fd[i];
    std::vector<float> dx = dx0;
    cpu_backward(x, w, dx, g, true);
    expect_close(dx, want, 1e-4, 1e-6, "dx accumulated");
  }
}

TEST(PoolCpu, MaxBackwardRoutesToFirstMaximum) {
  // Hand case: one 3x3 window whose maximum 5 appears at (0,1), (0,2), (1,0) and (2,2); the
  // gradient must land on (0,1) only.
  {
    const PoolGeometry g = geometry({PoolType::Max, 1, 3, 3, 1, 3, 1, false, 1, 1});
    const std::vector<float> x = {0, 5, 5, 5, 1, 5, 0, 0, 5};
    std::vector<float> dx(9, std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, {2.5f}, dx, g, false);
    expect_close(dx, {0, 2.5, 0, 0, 0, 0, 0, 0, 0}, 0, 0, "hand ties");
  }
  // Random inputs from three levels, so almost every window ties; overlapping windows share
  // inputs, and the rule is applied per output. Each shape also at batch 8 (one whole block of
  // cases for the vectorised path) and 13 (a block and a tail of five, one case at a time).
  std::vector<PoolCase> shapes;
  for (PoolCase t : cases()) {
    if (t.type != PoolType::Max) continue;
    shapes.push_back(t);
    for (int batch : {8, 13}) {
      t.n = batch;
      shapes.push_back(t);
    }
  }
  uint32_t seed = 800;
  for (const PoolCase& t : shapes) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    std::vector<float> x = random_vector(in_numel(g), ++seed, 0.f, 3.f);
    for (float& v : x) v = std::floor(v);
    const std::vector<float> w = random_vector(out_numel(g), ++seed);
    std::vector<float> dx(in_numel(g), std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, w, dx, g, false);
    expect_close(dx, ref_backward(to_double(x), to_double(w), g), 1e-6, 1e-7, "ties");
  }
}

TEST(PoolCpu, LargeShapesMatchReference) {
  // AlexNet-like layers, big enough for every thread to get channels.
  const std::vector<PoolCase> large = {
      {PoolType::Max, 24, 27, 27, 16, 3, 2, false, 13, 13},
      {PoolType::Max, 16, 28, 26, 8, 3, 2, true, 14, 13},
      {PoolType::Avg, 24, 27, 27, 16, 3, 2, false, 13, 13},
      {PoolType::Avg, 16, 28, 26, 8, 3, 2, true, 14, 13},
      {PoolType::Max, 16, 28, 26, 8, 3, 2, true, 15, 14, 1},
      {PoolType::Avg, 24, 27, 27, 16, 3, 2, false, 14, 14, 1, false},
  };
  uint32_t seed = 900;
  for (const PoolCase& t : large) {
    SCOPED_TRACE(name(t));
    const PoolGeometry g = geometry(t);
    ASSERT_EQ(g.out_h, t.want_oh);
    ASSERT_EQ(g.out_w, t.want_ow);
    const std::vector<float> x = random_vector(in_numel(g), ++seed, -2.f, 2.f);
    const std::vector<float> w = random_vector(out_numel(g), ++seed);
    expect_close(cpu_forward(x, g), ref_forward(to_double(x), g), 1e-5, 1e-6, "y");
    std::vector<float> dx(in_numel(g), std::numeric_limits<float>::quiet_NaN());
    cpu_backward(x, w, dx, g, false);
    expect_close(dx, ref_backward(to_double(x), to_double(w), g), 1e-5, 1e-6, "dx");
  }
}

}  // namespace
}  // namespace convnet

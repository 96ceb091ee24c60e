// Tests of same-map response normalisation (cuda-convnet2's rnorm; ops.h rnorm_*): forward
// against a float64 reference written from the formula, backward against central finite
// differences of that reference, hand-computed window placements (odd and even sizes, clipped
// at the edges), and the layer's options. The CUDA kernels are compared with these in
// test_cuda_ops.cpp; the layer's gradient checks are also in test_layers.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "convnet/error.h"
#include "convnet/gradcheck.h"
#include "convnet/layer.h"
#include "convnet/net.h"
#include "convnet/ops.h"
#include "layer_harness.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::expect_throw_containing;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

RnormParams params(int size, float k, float alpha, float beta) {
  RnormParams p;
  p.size = size;
  p.k = k;
  p.alpha = alpha;
  p.beta = beta;
  return p;
}

struct RnormCase {
  int c, h, w, n;
  RnormParams p;
  float scale;  // inputs uniform in [-scale, scale)
  Shape shape() const { return {c, h, w, n}; }
  size_t numel() const { return size_t(c) * h * w * n; }
  std::string name() const {
    return "C=" + std::to_string(c) + " H=" + std::to_string(h) + " W=" + std::to_string(w) +
           " N=" + std::to_string(n) + " size=" + std::to_string(p.size) + " k=" +
           std::to_string(p.k) + " alpha=" + std::to_string(p.alpha) + " beta=" +
           std::to_string(p.beta);
  }
};

// Large alphas make the normalisation a big effect, so a misplaced window would show.
std::vector<RnormCase> small_cases() {
  return {
      {2, 5, 5, 3, params(3, 1.0f, 0.3f, 0.75f), 2.0f},   // odd size, centred window
      {2, 4, 6, 2, params(4, 1.5f, 0.2f, 0.6f), 2.0f},    // even size: two before, one after
      {1, 3, 5, 4, params(2, 0.5f, 0.5f, 1.0f), 1.5f},    // size 2: [p - 1, p]
      {3, 3, 2, 2, params(5, 1.0f, 0.4f, 0.5f), 2.0f},    // window wider than the image
      {2, 2, 3, 3, params(1, 2.0f, 0.7f, 0.75f), 2.0f},   // size 1: each value alone
      {1, 6, 4, 1, params(3, 1.0f, 0.05f, 0.75f), 3.0f},  // batch 1, non-square
      {2, 4, 4, 2, params(6, 1.0f, 0.1f, 0.9f), 2.0f},    // even size larger than the image
  };
}

struct Ref {
  std::vector<double> y, denom;
};

// From the formula, naive loops over CHWN indices: win(q) = [q - size/2, q - size/2 + size - 1].
Ref ref_forward(const std::vector<double>& x, const RnormCase& t) {
  const RnormParams& p = t.p;
  Ref r{std::vector<double>(x.size()), std::vector<double>(x.size())};
  auto at = [&](int c, int y, int xx, int n) { return ((size_t(c) * t.h + y) * t.w + xx) * t.n + n; };
  for (int c = 0; c < t.c; ++c)
    for (int y = 0; y < t.h; ++y)
      for (int xx = 0; xx < t.w; ++xx)
        for (int n = 0; n < t.n; ++n) {
          double s = 0;
          for (int wy = y - p.size / 2; wy < y - p.size / 2 + p.size; ++wy)
            for (int wx = xx - p.size / 2; wx < xx - p.size / 2 + p.size; ++wx)
              if (wy >= 0 && wy < t.h && wx >= 0 && wx < t.w) s += x[at(c, wy, wx, n)] * x[at(c, wy, wx, n)];
          const double d = double(p.k) + double(p.alpha) * s;
          r.denom[at(c, y, xx, n)] = d;
          r.y[at(c, y, xx, n)] = x[at(c, y, xx, n)] * std::pow(d, -double(p.beta));
        }
  return r;
}

Tensor host(const Shape& s, const std::vector<float>& v) {
  Tensor t(s, Device::cpu());
  t.copy_from_host(v.data());
  return t;
}

struct Out {
  Tensor y, denom;
};

Out op_forward(const std::vector<float>& x, const RnormCase& t) {
  Out o{Tensor(t.shape(), Device::cpu()), Tensor(t.shape(), Device::cpu())};
  o.y.fill(std::nanf(""));
  o.denom.fill(std::nanf(""));
  rnorm_forward(host(t.shape(), x), o.y, o.denom, t.p);
  return o;
}

std::vector<float> op_backward(const std::vector<float>& x, const std::vector<float>& dy,
                               std::vector<float> dx, const RnormCase& t, bool accumulate) {
  const Tensor xt = host(t.shape(), x);
  Out f{Tensor(t.shape(), Device::cpu()), Tensor(t.shape(), Device::cpu())};
  rnorm_forward(xt, f.y, f.denom, t.p);
  Tensor dxt = host(t.shape(), dx);
  rnorm_backward(xt, f.y, f.denom, host(t.shape(), dy), dxt, t.p, accumulate);
  return dxt.to_vector();
}

std::vector<double> fd_gradient(const std::vector<float>& x, const std::vector<float>& w,
                                const RnormCase& t) {
  const std::vector<double> wd = to_double(w);
  return numeric_gradient(
      [&](const std::vector<double>& xd) { return weighted_sum(ref_forward(xd, t).y, wd); },
      to_double(x));
}

TEST(Rnorm, HandComputedWindows) {
  // One channel, 3x3, values 1..9, k = alpha = beta = 1: d = 1 + sum of the window's squares.
  const RnormCase odd{1, 3, 3, 1, params(3, 1, 1, 1), 0};
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  Out o = op_forward(x, odd);
  // size 3 is centred and clipped: the corner sees {1, 2, 4, 5}, the centre all nine.
  expect_close(o.denom.to_vector(), {47, 92, 75, 160, 286, 220, 155, 272, 207}, 1e-6, 0, "size 3");
  expect_close(o.y.to_vector(), {1.0 / 47, 2.0 / 92, 3.0 / 75, 4.0 / 160, 5.0 / 286, 6.0 / 220,
                                 7.0 / 155, 8.0 / 272, 9.0 / 207},
               1e-6, 0, "size 3 y");
  // size 2: win(q) = [q - 1, q], so (y, x) sees itself, its left, upper and upper-left
  // neighbours: (0,0) {1}, (1,0) {1, 4}, (2,2) {5, 6, 8, 9}.
  const RnormCase even{1, 3, 3, 1, params(2, 1, 1, 1), 0};
  o = op_forward(x, even);
  expect_close(o.denom.to_vector(), {2, 6, 14, 18, 47, 75, 66, 155, 207}, 1e-6, 0, "size 2");
  // size 4: win(q) = [q - 2, q + 1]: (0,0) sees rows 0-1, columns 0-1.
  const RnormCase four{1, 3, 3, 1, params(4, 1, 1, 1), 0};
  o = op_forward(x, four);
  EXPECT_FLOAT_EQ(o.denom.to_vector()[0], 47);
  EXPECT_FLOAT_EQ(o.denom.to_vector()[4], 286);
  // Channels never mix: a second channel of zeros divides by k alone.
  const RnormCase two{2, 3, 3, 1, params(3, 1, 1, 1), 0};
  std::vector<float> x2 = x;
  x2.resize(18, 0.f);
  o = op_forward(x2, two);
  const std::vector<float> d2 = o.denom.to_vector();
  EXPECT_FLOAT_EQ(d2[4], 286);
  for (int i = 9; i < 18; ++i) EXPECT_FLOAT_EQ(d2[size_t(i)], 1) << i;
}

TEST(Rnorm, ForwardMatchesFloat64Reference) {
  uint32_t seed = 10;
  std::vector<RnormCase> cases = small_cases();
  cases.push_back({5, 13, 11, 37, params(5, 1.0f, 0.02f, 0.75f), 2.0f});  // several threads' rows
  for (const RnormCase& t : cases) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const Out got = op_forward(x, t);
    const Ref want = ref_forward(to_double(x), t);
    expect_close(got.y.to_vector(), want.y, 1e-5, 1e-7, "y");
    expect_close(got.denom.to_vector(), want.denom, 1e-5, 0, "denom");
  }
}

TEST(Rnorm, BackwardMatchesFiniteDifferences) {
  uint32_t seed = 20;
  for (const RnormCase& t : small_cases()) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const std::vector<float> w = random_vector(t.numel(), ++seed);
    const std::vector<double> fd = fd_gradient(x, w, t);
    // Overwrite mode must not read dx: NaN in it.
    const std::vector<float> dx =
        op_backward(x, w, std::vector<float>(t.numel(), std::nanf("")), t, false);
    expect_close(dx, fd, 1e-4, 1e-5, "dx");
  }
}

TEST(Rnorm, BackwardAccumulateAddsOntoDx) {
  uint32_t seed = 30;
  for (const RnormCase& t : small_cases()) {
    SCOPED_TRACE(t.name());
    const std::vector<float> x = random_vector(t.numel(), ++seed, -t.scale, t.scale);
    const std::vector<float> w = random_vector(t.numel(), ++seed);
    const std::vector<float> dx0 = random_vector(t.numel(), ++seed, -3.f, 3.f);
    const std::vector<double> fd = fd_gradient(x, w, t);
    std::vector<double> want(fd.size());
    for (size_t i = 0; i < fd.size(); ++i) want[i] = dx0[i] + fd[i];
    expect_close(op_backward(x, w, dx0, t, true), want, 1e-4, 1e-5, "dx accumulated");
  }
}

TEST(Rnorm, OpRefusesBadArguments) {
  const Shape s{2, 3, 3, 2};
  Tensor x(s, Device::cpu()), y(s, Device::cpu()), d(s, Device::cpu());
  x.fill(1.f);
  EXPECT_THROW(rnorm_forward(x, x, d, RnormParams{}), ValueError);
  EXPECT_THROW(rnorm_forward(x, y, y, RnormParams{}), ValueError);
  expect_throw_containing<ValueError>([&] { rnorm_forward(x, y, d, params(0, 1, 1, 1)); },
                                      "size must be >= 1");
  Tensor small({2, 3, 2, 2}, Device::cpu());
  EXPECT_THROW(rnorm_forward(x, small, d, RnormParams{}), ValueError);
  rnorm_forward(x, y, d, RnormParams{});
  Tensor dy(s, Device::cpu());
  dy.fill(1.f);
  EXPECT_THROW(rnorm_backward(x, y, d, dy, dy, RnormParams{}, false), ValueError);
}

// ---- the layer ----

TEST(RnormLayer, OptionsAndDefaults) {
  auto layer = make_layer(ModelSpec::from_json(
                              R"([{"name": "r", "type": "rnorm", "inputs": ["a"], "alpha": 0.01}])")
                              .layers.at(0));
  const auto opts = layer->options_in_effect();
  EXPECT_EQ(opts.at("size").get<int>(), 5);
  EXPECT_DOUBLE_EQ(opts.at("k").get<double>(), 1.0);  // cuda-convnet2's minDiv default
  EXPECT_DOUBLE_EQ(opts.at("beta").get<double>(), 0.75);
  EXPECT_EQ(layer->setup({{3, 4, 4, 2}}), Shape({3, 4, 4, 2}));
  EXPECT_TRUE(layer->params().empty());
}

TEST(RnormLayer, BadOptionsNameTheLayer) {
  auto make = [](const std::string& extra) {
    return make_layer(ModelSpec::from_json(R"([{"name": "r1", "type": "rnorm", "inputs": ["a"])" +
                                           extra + "}]")
                          .layers.at(0));
  };
  expect_throw_containing<ValueError>([&] { make(R"(, "alpha": 0.1, "size": 0)"); },
                                      "layer 'r1' (rnorm): size must be >= 1");
  expect_throw_containing<ValueError>([&] { make(R"(, "alpha": 0.1, "k": 0)"); },
                                      "layer 'r1' (rnorm): need k > 0");
  expect_throw_containing<ValueError>([&] { make(R"(, "alpha": -1)"); }, "layer 'r1' (rnorm)");
  expect_throw_containing<ValueError>([&] { make(""); }, "alpha");  // required
  expect_throw_containing<ValueError>([&] { make(R"(, "alpha": 0.1, "scale": 1)"); }, "scale");
}

TEST(RnormLayer, LayerMatchesTheOpForwardAndBackward) {
  testing::LayerHarness h(
      R"({"name": "r", "type": "rnorm", "inputs": ["a"], "size": 3, "k": 2, "alpha": 0.25, "beta": 0.75})",
      {{3, 5, 4, 2}}, 7);
  h.forward();
  const RnormCase t{3, 5, 4, 2, params(3, 2.f, 0.25f, 0.75f), 1.f};
  const std::vector<float> x = h.in[0].to_vector();
  expect_close(h.out.to_vector(), ref_forward(to_double(x), t).y, 1e-5, 1e-7, "layer y");
  const std::vector<float> w = random_vector(t.numel(), 99);
  expect_close(h.backward(w)[0], fd_gradient(x, w, t), 1e-4, 1e-5, "layer dx");
}

// In a net, an rnorm output read by two layers gets the sum of both gradients (the second
// reader's backward accumulates); the parameters below it match the net's finite differences.
TEST(RnormLayer, InANetWithTwoReadersMatchesFiniteDifferences) {
  const std::string json = R"([
    {"name": "data", "type": "input", "channels": 2, "size": 5},
    {"name": "labels", "type": "labels"},
    {"name": "c1", "type": "conv", "inputs": ["data"], "filters": 3, "size": 3, "padding": 1, "initW": 0.5},
    {"name": "r1", "type": "rnorm", "inputs": ["c1"], "size": 3, "alpha": 0.2},
    {"name": "f1", "type": "fc", "inputs": ["r1"], "outputs": 4, "initW": 0.3},
    {"name": "f2", "type": "fc", "inputs": ["r1"], "outputs": 4, "initW": 0.3},
    {"name": "s", "type": "sum", "inputs": ["f1", "f2"]},
    {"name": "cost", "type": "softmax_cost", "inputs": ["s", "labels"]}
  ])";
  Net net(ModelSpec::from_json(json), {}, 3);
  const int batch = 3;
  Tensor x({2, 5, 5, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 5).data());
  net.set_input("data", x);
  const std::vector<float> y = {0, 3, 1};
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
  GradCheckOptions o;
  o.samples = 24;
  o.step = 1e-2;
  o.tolerance = 1e-2;
  const auto results = check_gradients(net, o);
  ASSERT_EQ(results.size(), 6u);  // weights and biases of c1, f1, f2
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok) << r.param << " relative error " << r.relative_error;
    EXPECT_GT(r.max_abs_analytic, 0) << r.param;
  }
}

}  // namespace
}  // namespace convnet

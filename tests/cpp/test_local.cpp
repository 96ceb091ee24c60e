// Tests of the locally connected layer (cuda-convnet2's `local`; ops.h local_*): forward against
// a float64 reference written from the formula (unshared filters and biases per output
// position), the input, weight and bias gradients against central finite differences of that
// reference, chunked column matrices, several inputs, parameter shapes and counts, accumulate,
// and errors naming the layer. The CUDA path is compared with these in test_cuda_ops.cpp and
// test_layers.cpp.
#include <gtest/gtest.h>

#include <cmath>
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
using testing::LayerHarness;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

struct LocalCase {
  int c, h, w, n;
  int filters, size, stride, pad;
  bool ceil;
  int chunk_rows;
  int oh() const { return ceil ? 1 + (h + 2 * pad - size + stride - 1) / stride : 1 + (h + 2 * pad - size) / stride; }
  int ow() const { return ceil ? 1 + (w + 2 * pad - size + stride - 1) / stride : 1 + (w + 2 * pad - size) / stride; }
  std::string json() const {
    return R"({"name": "l", "type": "local", "inputs": ["a"], "filters": )" + std::to_string(filters) +
           R"(, "size": )" + std::to_string(size) + R"(, "stride": )" + std::to_string(stride) +
           R"(, "padding": )" + std::to_string(pad) + R"(, "ceil": )" + (ceil ? "true" : "false") +
           R"(, "chunk_rows": )" + std::to_string(chunk_rows) + "}";
  }
  Shape in_shape() const { return {c, h, w, n}; }
  std::string name() const { return json() + " on " + shape_str(in_shape()); }
};

std::vector<LocalCase> cases() {
  return {
      {2, 4, 5, 3, 3, 3, 1, 1, false, 0},  // same-size output, one chunk
      {3, 5, 4, 2, 2, 2, 2, 0, true, 1},   // ceil: the last row and column read past the edge
      {1, 3, 3, 1, 2, 1, 1, 0, false, 2},  // 1x1 filters, batch 1, chunks of 2 rows of 3
      {2, 7, 6, 2, 2, 4, 3, 2, false, 1},  // stride 3, padding 2, one row per chunk
  };
}

// y[f, oy, ox, n] = b[f, oy, ox] + sum_{c, ky, kx} w[m, f, c, ky, kx] x[c, oy*s - p + ky, ox*s - p + kx, n]
// with m = oy * OW + ox and zeros outside the input.
std::vector<double> ref_forward(const std::vector<double>& x, const std::vector<double>& w,
                                const std::vector<double>& b, const LocalCase& t) {
  const int OH = t.oh(), OW = t.ow(), K = t.size;
  std::vector<double> y(size_t(t.filters) * OH * OW * t.n);
  for (int f = 0; f < t.filters; ++f)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox)
        for (int n = 0; n < t.n; ++n) {
          const int m = oy * OW + ox;
          double s = b[(size_t(f) * OH + oy) * OW + ox];
          for (int c = 0; c < t.c; ++c)
            for (int ky = 0; ky < K; ++ky)
              for (int kx = 0; kx < K; ++kx) {
                const int iy = oy * t.stride - t.pad + ky, ix = ox * t.stride - t.pad + kx;
                if (iy < 0 || iy >= t.h || ix < 0 || ix >= t.w) continue;
                s += w[(((size_t(m) * t.filters + f) * t.c + c) * K + ky) * K + kx] *
                     x[((size_t(c) * t.h + iy) * t.w + ix) * t.n + n];
              }
          y[((size_t(f) * OH + oy) * OW + ox) * t.n + n] = s;
        }
  return y;
}

TEST(LocalLayer, ParameterShapesAndCifarLocal3Count) {
  // cuda-convnet2's CIFAR-10 local3: 64 filters, 3x3, padding 1, on 64 channels at 6x6.
  auto layer = make_layer(ModelSpec::from_json(
      R"([{"name": "local3", "type": "local", "inputs": ["a"], "filters": 64, "size": 3, "padding": 1}])")
                              .layers.at(0));
  EXPECT_EQ(layer->setup({{64, 6, 6, 8}}), Shape({64, 6, 6, 8}));
  ASSERT_EQ(layer->params().size(), 2u);
  EXPECT_EQ(layer->params()[0].name, "local3.weights");
  EXPECT_EQ(layer->params()[0].value.shape(), Shape({36, 64, 64, 3, 3}));
  EXPECT_EQ(layer->params()[0].value.numel(), 36 * 64 * 64 * 9);
  EXPECT_EQ(layer->params()[1].name, "local3.biases");
  EXPECT_EQ(layer->params()[1].value.shape(), Shape({64, 6, 6}));
  EXPECT_EQ(layer->params()[1].value.numel(), 36 * 64);
  // A new batch size keeps the parameters.
  EXPECT_EQ(layer->setup({{64, 6, 6, 3}}), Shape({64, 6, 6, 3}));
  EXPECT_EQ(layer->params()[0].value.shape(), Shape({36, 64, 64, 3, 3}));
  // Kaiming init uses fan_in = channels * size * size.
  auto kaiming = make_layer(ModelSpec::from_json(
      R"([{"name": "l", "type": "local", "inputs": ["a"], "filters": 4, "size": 3, "init": "kaiming"}])")
                                .layers.at(0));
  kaiming->setup({{5, 4, 4, 2}});
  EXPECT_FLOAT_EQ(kaiming->params()[0].init_std, float(std::sqrt(2.0 / (5 * 3 * 3))));
}

TEST(LocalLayer, ForwardMatchesFloat64Reference) {
  uint32_t seed = 10;
  for (const LocalCase& t : cases()) {
    SCOPED_TRACE(t.name());
    LayerHarness h(t.json(), {t.in_shape()}, ++seed);
    ASSERT_EQ(h.out_shape, Shape({t.filters, t.oh(), t.ow(), t.n}));
    h.forward();
    const auto want = ref_forward(to_double(h.in[0].to_vector()),
                                  to_double(h.layer->params()[0].value.to_vector()),
                                  to_double(h.layer->params()[1].value.to_vector()), t);
    expect_close(h.out.to_vector(), want, 1e-5, 1e-6, "y");
  }
}

TEST(LocalLayer, GradientsMatchFiniteDifferences) {
  uint32_t seed = 20;
  for (const LocalCase& t : cases()) {
    SCOPED_TRACE(t.name());
    LayerHarness h(t.json(), {t.in_shape()}, ++seed);
    h.forward();
    const std::vector<float> r = random_vector(size_t(shape_numel(h.out_shape)), ++seed);
    const std::vector<float> dx = h.backward(r)[0];
    const std::vector<double> x = to_double(h.in[0].to_vector()), rd = to_double(r);
    const std::vector<double> w = to_double(h.layer->params()[0].value.to_vector());
    const std::vector<double> b = to_double(h.layer->params()[1].value.to_vector());
    expect_close(dx,
                 numeric_gradient([&](const std::vector<double>& v) { return weighted_sum(ref_forward(v, w, b, t), rd); }, x),
                 1e-4, 1e-5, "dx");
    expect_close(h.layer->params()[0].grad.to_vector(),
                 numeric_gradient([&](const std::vector<double>& v) { return weighted_sum(ref_forward(x, v, b, t), rd); }, w),
                 1e-4, 1e-5, "dW");
    expect_close(h.layer->params()[1].grad.to_vector(),
                 numeric_gradient([&](const std::vector<double>& v) { return weighted_sum(ref_forward(x, w, v, t), rd); }, b),
                 1e-4, 1e-5, "db");
  }
}

TEST(LocalLayer, BackwardAccumulateAddsOntoDx) {
  const LocalCase t = cases()[1];
  LayerHarness h(t.json(), {t.in_shape()}, 31);
  h.forward();
  const std::vector<float> r = random_vector(size_t(shape_numel(h.out_shape)), 32);
  const std::vector<float> fresh = h.backward(r)[0];
  const std::vector<float> dw = h.layer->params()[0].grad.to_vector();
  Tensor dout(h.out_shape, Device::cpu());
  dout.copy_from_host(r.data());
  const std::vector<float> start = random_vector(fresh.size(), 33, -2.f, 2.f);
  std::vector<Tensor> din{Tensor(t.in_shape(), Device::cpu())};
  din[0].copy_from_host(start.data());
  h.layer->backward(h.in, h.out, dout, din, {true}, PassContext{});
  std::vector<double> want(fresh.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = double(start[i]) + fresh[i];
  expect_close(din[0].to_vector(), want, 1e-6, 1e-6, "dx accumulated");
  // Parameter gradients are overwritten, never accumulated.
  expect_close(h.layer->params()[0].grad.to_vector(), to_double(dw), 0, 0, "dW overwritten");
}

TEST(LocalLayer, ChunkingDoesNotChangeTheNumbers) {
  LocalCase one = cases()[3], rows = one;
  one.chunk_rows = 0;  // a single chunk
  LayerHarness a(one.json(), {one.in_shape()}, 41), b(rows.json(), {rows.in_shape()}, 41);
  a.forward();
  b.forward();
  EXPECT_EQ(a.out.to_vector(), b.out.to_vector());
  const std::vector<float> r = random_vector(size_t(shape_numel(a.out_shape)), 42);
  // col2im adds each chunk's share into dx in another order: equal up to rounding.
  expect_close(a.backward(r)[0], to_double(b.backward(r)[0]), 1e-6, 1e-7, "dx");
  EXPECT_EQ(a.layer->params()[0].grad.to_vector(), b.layer->params()[0].grad.to_vector());
}

TEST(LocalLayer, TwoInputsAreJoinedAlongChannels) {
  // Inputs of 1 and 2 channels read as the 3 channels of one input, in order.
  const std::string opts = R"("filters": 2, "size": 3, "padding": 1})";
  LayerHarness two(R"({"name": "l", "type": "local", "inputs": ["a", "b"], )" + opts,
                   {{1, 4, 4, 2}, {2, 4, 4, 2}}, 51);
  LayerHarness one(R"({"name": "l", "type": "local", "inputs": ["a"], )" + opts, {{3, 4, 4, 2}}, 51);
  std::vector<float> joined = two.in[0].to_vector(), second = two.in[1].to_vector();
  joined.insert(joined.end(), second.begin(), second.end());
  one.in[0].copy_from_host(joined.data());
  two.forward();
  one.forward();
  EXPECT_EQ(two.out.to_vector(), one.out.to_vector());
  const std::vector<float> r = random_vector(size_t(shape_numel(one.out_shape)), 52);
  const auto d2 = two.backward(r), d1 = one.backward(r);
  std::vector<float> cat = d2[0];
  cat.insert(cat.end(), d2[1].begin(), d2[1].end());
  EXPECT_EQ(cat, d1[0]);
}

TEST(LocalLayer, BadOptionsNameTheLayer) {
  auto make = [](const std::string& extra) {
    return make_layer(ModelSpec::from_json(R"([{"name": "l1", "type": "local", "inputs": ["a"])" +
                                           extra + "}]")
                          .layers.at(0));
  };
  expect_throw_containing<ValueError>(
      [&] { make(R"(, "filters": 4, "size": 9)")->setup({{3, 4, 4, 2}}); },
      "layer 'l1' (local): filter size 9 is larger than the padded input 4x4");
  expect_throw_containing<ValueError>(
      [&] { make(R"(, "filters": 0, "size": 3)")->setup({{3, 4, 4, 2}}); },
      "layer 'l1' (local): need filters > 0");
  expect_throw_containing<ValueError>(
      [&] { make(R"(, "filters": 2, "size": 3, "stride": 0)")->setup({{3, 4, 4, 2}}); },
      "layer 'l1' (local)");
  expect_throw_containing<ValueError>([&] { make(R"(, "size": 3)"); }, "filters");  // required
  expect_throw_containing<ValueError>([&] { make(R"(, "filters": 2, "size": 3, "chunk_rows": -1)"); },
                                      "layer 'l1' (local): chunk_rows must be >= 0");
  expect_throw_containing<ValueError>([&] { make(R"(, "filters": 2, "size": 3, "groups": 2)"); },
                                      "groups");  // not a local layer's option
  // Unshared weights fix the input's height and width.
  auto l = make(R"(, "filters": 2, "size": 3)");
  l->setup({{3, 5, 5, 2}});
  expect_throw_containing<ValueError>([&] { l->setup({{3, 6, 6, 2}}); },
                                      "layer 'l1' (local): inputs of 3x6x6 need weights");
  expect_throw_containing<ValueError>(
      [&] {
        make_layer(ModelSpec::from_json(
                       R"([{"name": "l2", "type": "local", "inputs": ["a", "b"], "filters": 2, "size": 3}])")
                       .layers.at(0))
            ->setup({{1, 5, 5, 2}, {1, 4, 5, 2}});
      },
      "layer 'l2' (local): input 'b' is 4x5");
}

TEST(LocalOp, RefusesMismatchedArguments) {
  ConvGeometry g;
  g.channels = 2, g.height = 4, g.width = 4, g.batch = 2, g.filters = 3, g.size = 3, g.pad = 1;
  g.finish("test");
  Tensor cols({int(im2col_floats(g, 0, g.out_h))}, Device::cpu());
  Tensor w({int(g.out_pixels()), 3, 2, 3, 3}, Device::cpu()), y({3, 4, 4, 2}, Device::cpu());
  cols.fill(0.f);
  w.fill(0.f);
  local_forward(cols, w, g, 0, 4, y);
  Tensor wrong_w({int(g.out_pixels()), 3, 2, 2, 3, 3}, Device::cpu());
  expect_throw_containing<ValueError>([&] { local_forward(cols, wrong_w, g, 0, 4, y); }, "local_forward: weights");
  Tensor wrong_y({3, 4, 3, 2}, Device::cpu());
  expect_throw_containing<ValueError>([&] { local_forward(cols, w, g, 0, 4, wrong_y); }, "local_forward: output");
  expect_throw_containing<ValueError>([&] { local_forward(cols, w, g, 2, 5, y); }, "out of range");
  Tensor short_cols({int(im2col_floats(g, 0, 2))}, Device::cpu());
  expect_throw_containing<ValueError>([&] { local_forward(short_cols, w, g, 0, 4, y); }, "column buffer");
  local_forward(short_cols, w, g, 0, 2, y);  // enough for two rows
  ConvGeometry grouped = g;
  grouped.groups = 2;
  expect_throw_containing<ValueError>([&] { local_forward(cols, w, grouped, 0, 4, y); }, "no groups");
}

// A net with a local layer whose output two layers read: the second reader's backward
// accumulates into it, and every parameter matches the net's finite differences.
TEST(LocalLayer, InANetWithTwoReadersMatchesFiniteDifferences) {
  const std::string json = R"([
    {"name": "data", "type": "input", "channels": 2, "size": 5},
    {"name": "labels", "type": "labels"},
    {"name": "l1", "type": "local", "inputs": ["data"], "filters": 3, "size": 3, "stride": 2, "ceil": true, "initW": 0.5, "neuron": "tanh"},
    {"name": "r1", "type": "rnorm", "inputs": ["l1"], "size": 2, "alpha": 0.3},
    {"name": "f1", "type": "fc", "inputs": ["r1"], "outputs": 4, "initW": 0.3},
    {"name": "f2", "type": "fc", "inputs": ["l1"], "outputs": 4, "initW": 0.3},
    {"name": "s", "type": "sum", "inputs": ["f1", "f2"]},
    {"name": "cost", "type": "softmax_cost", "inputs": ["s", "labels"]}
  ])";
  Net net(ModelSpec::from_json(json), {}, 3);
  const int batch = 3;
  Tensor x({2, 5, 5, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 6).data());
  net.set_input("data", x);
  const std::vector<float> y = {1, 0, 3};
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
  GradCheckOptions o;
  o.samples = 24;
  o.step = 1e-2;
  o.tolerance = 1e-2;
  const auto results = check_gradients(net, o);
  ASSERT_EQ(results.size(), 6u);  // weights and biases of l1, f1, f2
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok) << r.param << " relative error " << r.relative_error;
    EXPECT_GT(r.max_abs_analytic, 0) << r.param;
  }
}

}  // namespace
}  // namespace convnet

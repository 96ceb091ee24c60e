// Convolution layer (im2col + GEMM, chunked, grouped, 1x1 direct, joined inputs) against a
// float64 direct convolution written from the definition, and its backward against finite
// differences of that reference.
#include <cmath>
#include <string>

#include "layer_harness.h"

namespace convnet::testing {
namespace {

struct ConvCase {
  int channels, height, width, batch, filters, size, stride, pad, groups;
  std::string neuron;
  int chunk_rows;  // 0: default (one chunk at these sizes)
  int inputs;      // joined inputs (channels split evenly among them)
};

std::ostream& operator<<(std::ostream& os, const ConvCase& c) {
  return os << c.channels << "x" << c.height << "x" << c.width << " n" << c.batch << " f"
            << c.filters << " k" << c.size << " s" << c.stride << " p" << c.pad << " g" << c.groups
            << " " << c.neuron << " chunk" << c.chunk_rows << " in" << c.inputs;
}

double apply_neuron(const std::string& n, double v) {
  if (n == "relu") return v > 0 ? v : 0;
  if (n == "tanh") return std::tanh(v);
  if (n == "logistic") return 1 / (1 + std::exp(-v));
  return v;
}

int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

// out[f, oy, ox, n] = f(b[f] + sum_{c, ky, kx} W[f, c, ky, kx] x[g*Cg + c, oy*s-p+ky, ox*s-p+kx, n])
std::vector<double> reference(const ConvCase& c, const std::vector<double>& x,
                              const std::vector<double>& w, const std::vector<double>& b) {
  const int oh = out_size(c.height, c.size, c.stride, c.pad), ow = out_size(c.width, c.size, c.stride, c.pad);
  const int cg = c.channels / c.groups, fg = c.filters / c.groups, N = c.batch;
  std::vector<double> out(size_t(c.filters) * oh * ow * N);
  for (int f = 0; f < c.filters; ++f)
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox)
        for (int n = 0; n < N; ++n) {
          double s = b[f];
          const int grp = f / fg;
          for (int ci = 0; ci < cg; ++ci)
            for (int ky = 0; ky < c.size; ++ky)
              for (int kx = 0; kx < c.size; ++kx) {
                const int iy = oy * c.stride - c.pad + ky, ix = ox * c.stride - c.pad + kx;
                if (iy < 0 || iy >= c.height || ix < 0 || ix >= c.width) continue;
                const int ch = grp * cg + ci;
                s += w[((size_t(f) * cg + ci) * c.size + ky) * c.size + kx] *
                     x[((size_t(ch) * c.height + iy) * c.width + ix) * N + n];
              }
          out[((size_t(f) * oh + oy) * ow + ox) * N + n] = apply_neuron(c.neuron, s);
        }
  return out;
}

std::string spec_json(const ConvCase& c) {
  std::string inputs;
  for (int i = 0; i < c.inputs; ++i) inputs += (i ? ",\"in" : "\"in") + std::to_string(i) + "\"";
  return "{\"name\":\"conv\",\"type\":\"conv\",\"inputs\":[" + inputs + "],\"filters\":" +
         std::to_string(c.filters) + ",\"size\":" + std::to_string(c.size) + ",\"stride\":" +
         std::to_string(c.stride) + ",\"padding\":" + std::to_string(c.pad) + ",\"groups\":" +
         std::to_string(c.groups) + ",\"neuron\":\"" + c.neuron + "\",\"chunk_rows\":" +
         std::to_string(c.chunk_rows) + "}";
}

class ConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvTest, ForwardMatchesFloat64Reference) {
  const ConvCase c = GetParam();
  std::vector<Shape> shapes(c.inputs, Shape{c.channels / c.inputs, c.height, c.width, c.batch});
  LayerHarness h(spec_json(c), shapes, 11);
  h.forward();
  std::vector<double> x;
  for (const Tensor& t : h.in) {
    auto v = t.to_vector();
    x.insert(x.end(), v.begin(), v.end());
  }
  auto want = reference(c, x, to_double(h.layer->params()[0].value.to_vector()),
                        to_double(h.layer->params()[1].value.to_vector()));
  expect_close(h.out.to_vector(), want, 1e-4, 1e-5, "conv forward");
}

TEST_P(ConvTest, BackwardMatchesFiniteDifferences) {
  ConvCase c = GetParam();
  if (c.neuron == "relu") c.neuron = "tanh";  // finite differences need a smooth neuron
  std::vector<Shape> shapes(c.inputs, Shape{c.channels / c.inputs, c.height, c.width, c.batch});
  LayerHarness h(spec_json(c), shapes, 23);
  h.forward();
  std::vector<double> x;
  for (const Tensor& t : h.in) {
    auto v = t.to_vector();
    x.insert(x.end(), v.begin(), v.end());
  }
  auto w = to_double(h.layer->params()[0].value.to_vector());
  auto b = to_double(h.layer->params()[1].value.to_vector());
  auto upstream = to_double(random_vector(size_t(shape_numel(h.out_shape)), 99));
  std::vector<float> upstream_f(upstream.begin(), upstream.end());
  auto din = h.backward(upstream_f);

  std::vector<float> dx;
  for (auto& d : din) dx.insert(dx.end(), d.begin(), d.end());
  auto num_dx = numeric_gradient([&](const std::vector<double>& xv) {
    return weighted_sum(reference(c, xv, w, b), upstream); }, x);
  expect_close(dx, num_dx, 1e-4, 1e-6, "d input");
  auto num_dw = numeric_gradient([&](const std::vector<double>& wv) {
    return weighted_sum(reference(c, x, wv, b), upstream); }, w);
  expect_close(h.layer->params()[0].grad.to_vector(), num_dw, 1e-4, 1e-6, "d weights");
  auto num_db = numeric_gradient([&](const std::vector<double>& bv) {
    return weighted_sum(reference(c, x, w, bv), upstream); }, b);
  expect_close(h.layer->params()[1].grad.to_vector(), num_db, 1e-4, 1e-6, "d biases");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvTest,
    ::testing::Values(
        ConvCase{3, 7, 7, 4, 5, 3, 1, 1, 1, "linear", 0, 1},    // same-size 3x3
        ConvCase{3, 9, 8, 1, 4, 5, 2, 2, 1, "tanh", 0, 1},      // batch 1, stride 2, non-square
        ConvCase{4, 11, 11, 3, 6, 3, 2, 0, 2, "relu", 0, 1},    // two groups, no padding
        ConvCase{3, 15, 15, 2, 4, 11, 4, 2, 1, "relu", 0, 1},   // AlexNet conv1 shape in miniature
        ConvCase{6, 5, 5, 5, 4, 1, 1, 0, 2, "logistic", 0, 1},  // 1x1 direct path, grouped
        ConvCase{4, 9, 7, 3, 4, 3, 1, 1, 1, "tanh", 2, 1},      // chunked along output rows
        ConvCase{5, 8, 8, 2, 3, 3, 3, 1, 1, "linear", 1, 1},    // stride 3, one row per chunk
        ConvCase{4, 6, 6, 3, 4, 3, 1, 1, 1, "tanh", 0, 2},      // two joined inputs (conv3)
        ConvCase{1, 5, 5, 7, 2, 5, 1, 0, 1, "linear", 0, 1},    // filter covers the input
        ConvCase{2, 3, 1, 2, 3, 5, 1, 2, 1, "tanh", 0, 1},      // padding wider than the input
        ConvCase{2, 2, 6, 3, 2, 3, 2, 2, 1, "linear", 0, 1}));  // stride 2, padding 2

}  // namespace
}  // namespace convnet::testing

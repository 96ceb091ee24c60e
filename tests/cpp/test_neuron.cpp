// CPU neurons and biases against float64 references written from the formulas, and their
// backward passes (through the output y) against central finite differences.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// f(x) in float64, straight from the definitions.
double ref_f(const Neuron& nr, double x) {
  switch (nr.type) {
    case NeuronType::Linear: return x;
    case NeuronType::Relu: return x > 0 ? x : 0;
    case NeuronType::LeakyRelu: return x > 0 ? x : double(nr.slope) * x;
    case NeuronType::Tanh: return std::tanh(x);
    case NeuronType::Logistic: return 1 / (1 + std::exp(-x));
    case NeuronType::Softsign: return x / (1 + std::fabs(x));
  }
  return kNaN;
}

std::vector<double> ref_f(const Neuron& nr, const std::vector<double>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = ref_f(nr, x[i]);
  return y;
}

std::vector<Neuron> all_neurons() {
  std::vector<Neuron> out;
  for (const char* name : {"linear", "relu", "leaky_relu", "tanh", "logistic", "softsign"})
    out.push_back(Neuron::parse(name));
  Neuron steep = Neuron::parse("leaky_relu");
  steep.slope = 0.3f;  // a slope far from the default, so a hard-coded 0.01 would fail
  out.push_back(steep);
  return out;
}

// Random inputs in [-3, 3], kept at least 1e-3 away from 0 so relu's kink never falls inside
// the finite-difference step.
std::vector<float> inputs(size_t n, uint32_t seed) {
  auto x = random_vector(n, seed, -3.f, 3.f);
  for (auto& v : x)
    if (std::fabs(v) < 1e-3f) v = v < 0 ? -0.5f : 0.5f;
  return x;
}

// Sizes with odd counts, a single element and a batch of 1.
const std::vector<std::pair<int, int64_t>> kShapes = {{1, 1}, {3, 7}, {5, 1}, {1, 13}, {17, 33}};

TEST(CpuNeuron, ForwardMatchesReference) {
  uint32_t seed = 1;
  for (const Neuron& nr : all_neurons()) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(1001), int64_t(1 << 16) + 3}) {
      SCOPED_TRACE(nr.name() + " n=" + std::to_string(n));
      auto x = inputs(size_t(n), seed++);
      std::vector<float> y(static_cast<size_t>(n), std::nanf(""));
      cpu::neuron_forward(x.data(), y.data(), n, nr);
      expect_close(y, ref_f(nr, to_double(x)), 1e-6, 1e-7, "neuron_forward");
      // In place gives the same.
      std::vector<float> z = x;
      cpu::neuron_forward(z.data(), z.data(), n, nr);
      expect_close(z, ref_f(nr, to_double(x)), 1e-6, 1e-7, "neuron_forward in place");
    }
  }
}

TEST(CpuNeuron, ForwardSaturatesWithoutNaN) {
  std::vector<float> x = {-200.f, -90.f, 90.f, 200.f, -1e30f, 1e30f};
  for (const Neuron& nr : all_neurons()) {
    SCOPED_TRACE(nr.name());
    std::vector<float> y(x.size());
    cpu::neuron_forward(x.data(), y.data(), int64_t(x.size()), nr);
    expect_close(y, ref_f(nr, to_double(x)), 1e-6, 1e-30, "saturated");
  }
}

// tanh and logistic are computed without libm (so they vectorise): hold them to a few ulp over
// a dense sweep, tiny arguments and the saturated tails.
TEST(CpuNeuron, SaturatingNeuronsAccurateOverDenseRange) {
  std::vector<float> x;
  for (double v = -100; v <= 100; v += 1.7e-3) x.push_back(float(v));
  for (float v = 1e-30f; v < 1.f; v *= 1.05f) {
    x.push_back(v);
    x.push_back(-v);
  }
  for (const char* name : {"tanh", "logistic"}) {
    SCOPED_TRACE(name);
    Neuron nr = Neuron::parse(name);
    std::vector<float> y(x.size());
    cpu::neuron_forward(x.data(), y.data(), int64_t(x.size()), nr);
    expect_close(y, ref_f(nr, to_double(x)), 3e-7, 1e-37, "dense sweep");
  }
}

TEST(CpuNeuron, BiasNeuronForwardMatchesReference) {
  uint32_t seed = 100;
  auto shapes = kShapes;
  shapes.push_back({3, 40001});   // long rows: the parallel path, several chunks per row
  shapes.push_back({2049, 17});   // many short rows
  for (const Neuron& nr : all_neurons()) {
    for (auto [rows, inner] : shapes) {
      SCOPED_TRACE(nr.name() + " rows=" + std::to_string(rows) + " inner=" + std::to_string(inner));
      const size_t n = size_t(rows) * size_t(inner);
      auto y0 = inputs(n, seed++);
      auto bias = random_vector(size_t(rows), seed++, -1.f, 1.f);
      std::vector<double> want(n), want_nobias(n);
      for (int r = 0; r < rows; ++r)
        for (int64_t j = 0; j < inner; ++j) {
          size_t i = size_t(r) * size_t(inner) + size_t(j);
          want[i] = ref_f(nr, double(y0[i]) + double(bias[size_t(r)]));
          want_nobias[i] = ref_f(nr, double(y0[i]));
        }
      auto y = y0;
      cpu::bias_neuron_forward(y.data(), bias.data(), rows, inner, nr);
      // The float sum y + b rounds once before f; allow for it.
      expect_close(y, want, 1e-5, 1e-6, "bias_neuron_forward");
      y = y0;
      cpu::bias_neuron_forward(y.data(), nullptr, rows, inner, nr);
      expect_close(y, want_nobias, 1e-6, 1e-7, "bias_neuron_forward without bias");
    }
  }
}

// dx from neuron_backward(y = f(x), dy = w) against d/dx of sum_i w_i f(x_i).
TEST(CpuNeuron, BackwardThroughOutputMatchesFiniteDifferences) {
  uint32_t seed = 200;
  for (const Neuron& nr : all_neurons()) {
    for (int64_t n : {int64_t(1), int64_t(6), int64_t(257)}) {
      SCOPED_TRACE(nr.name() + " n=" + std::to_string(n));
      auto x = inputs(size_t(n), seed++);
      auto w = random_vector(size_t(n), seed++, -1.f, 1.f);
      std::vector<float> y(static_cast<size_t>(n));
      cpu::neuron_forward(x.data(), y.data(), n, nr);
      std::vector<float> dx(static_cast<size_t>(n), std::nanf(""));  // garbage: must not be read
      cpu::neuron_backward(y.data(), w.data(), dx.data(), n, nr, false);
      const auto wd = to_double(w);
      auto want = numeric_gradient(
          [&](const std::vector<double>& xx) { return weighted_sum(ref_f(nr, xx), wd); },
          to_double(x));
      expect_close(dx, want, 1e-4, 1e-6, "neuron_backward");

      // accumulate = true adds the same result to what dx held.
      auto base = random_vector(size_t(n), seed++, -2.f, 2.f);
      auto acc = base;
      cpu::neuron_backward(y.data(), w.data(), acc.data(), n, nr, true);
      std::vector<double> want_acc(static_cast<size_t>(n));
      for (size_t i = 0; i < size_t(n); ++i) want_acc[i] = double(base[i]) + double(dx[i]);
      expect_close(acc, want_acc, 1e-6, 1e-6, "neuron_backward accumulate");
    }
  }
}

// Large tensors take the parallel path; compare against the derivative formula in float64.
TEST(CpuNeuron, BackwardLargeMatchesDerivative) {
  const int64_t n = (1 << 17) + 5;
  for (const Neuron& nr : all_neurons()) {
    SCOPED_TRACE(nr.name());
    auto x = inputs(size_t(n), 300);
    auto dy = random_vector(size_t(n), 301);
    std::vector<float> y(static_cast<size_t>(n)), dx(static_cast<size_t>(n), std::nanf(""));
    cpu::neuron_forward(x.data(), y.data(), n, nr);
    cpu::neuron_backward(y.data(), dy.data(), dx.data(), n, nr, false);
    std::vector<double> want(static_cast<size_t>(n));
    for (size_t i = 0; i < size_t(n); ++i) {
      double xi = x[i], d;
      switch (nr.type) {
        case NeuronType::Linear: d = 1; break;
        case NeuronType::Relu: d = xi > 0 ? 1 : 0; break;
        case NeuronType::LeakyRelu: d = xi > 0 ? 1 : double(nr.slope); break;
        case NeuronType::Tanh: d = 1 - std::tanh(xi) * std::tanh(xi); break;
        case NeuronType::Logistic: d = ref_f(nr, xi) * (1 - ref_f(nr, xi)); break;
        default: d = 1 / ((1 + std::fabs(xi)) * (1 + std::fabs(xi))); break;
      }
      want[i] = double(dy[i]) * d;
    }
    expect_close(dx, want, 1e-5, 1e-6, "neuron_backward large");
  }
}

// The fused layer y = f(y0 + b[r]): neuron_backward then bias_backward must give the gradients
// of sum w * y with respect to both y0 and b, for every neuron.
TEST(CpuNeuron, BiasNeuronBackwardMatchesFiniteDifferences) {
  uint32_t seed = 400;
  for (const Neuron& nr : all_neurons()) {
    for (const auto& shape : kShapes) {
      const int rows = shape.first;  // named copies: a lambda below captures them
      const int64_t inner = shape.second;
      SCOPED_TRACE(nr.name() + " rows=" + std::to_string(rows) + " inner=" + std::to_string(inner));
      const size_t n = size_t(rows) * size_t(inner);
      auto y0 = inputs(n, seed++);
      // Small biases, and pre-activations kept off relu's kink.
      auto bias = random_vector(size_t(rows), seed++, -0.2f, 0.2f);
      for (int r = 0; r < rows; ++r)
        for (int64_t j = 0; j < inner; ++j) {
          float& v = y0[size_t(r) * size_t(inner) + size_t(j)];
          if (std::fabs(v + bias[size_t(r)]) < 1e-3f) v += 0.5f;
        }
      auto w = random_vector(n, seed++);
      const auto wd = to_double(w);

      auto y = y0;
      cpu::bias_neuron_forward(y.data(), bias.data(), rows, inner, nr);
      std::vector<float> dpre(n, std::nanf(""));
      cpu::neuron_backward(y.data(), w.data(), dpre.data(), int64_t(n), nr, false);
      std::vector<float> db(static_cast<size_t>(rows), std::nanf(""));
      cpu::bias_backward(dpre.data(), db.data(), rows, inner, false);

      auto layer = [&](const std::vector<double>& in, const std::vector<double>& b) {
        std::vector<double> out(n);
        for (int r = 0; r < rows; ++r)
          for (int64_t j = 0; j < inner; ++j) {
            size_t i = size_t(r) * size_t(inner) + size_t(j);
            out[i] = ref_f(nr, in[i] + b[size_t(r)]);
          }
        return weighted_sum(out, wd);
      };
      const auto y0d = to_double(y0), bd = to_double(bias);
      auto want_dy0 = numeric_gradient([&](const std::vector<double>& v) { return layer(v, bd); }, y0d);
      auto want_db = numeric_gradient([&](const std::vector<double>& v) { return layer(y0d, v); }, bd);
      expect_close(dpre, want_dy0, 1e-4, 1e-6, "d pre-activation");
      expect_close(db, want_db, 1e-4, 1e-5, "d bias");
    }
  }
}

TEST(CpuNeuron, BiasBackwardSumsRows) {
  uint32_t seed = 500;
  auto shapes = kShapes;
  shapes.push_back({2, 300007});  // long rows: the parallel path
  shapes.push_back({4096, 9});
  for (auto [rows, inner] : shapes) {
    SCOPED_TRACE("rows=" + std::to_string(rows) + " inner=" + std::to_string(inner));
    const size_t n = size_t(rows) * size_t(inner);
    auto dy = random_vector(n, seed++);
    std::vector<double> want(static_cast<size_t>(rows), 0.0);
    for (int r = 0; r < rows; ++r)
      for (int64_t j = 0; j < inner; ++j) want[size_t(r)] += dy[size_t(r) * size_t(inner) + size_t(j)];
    std::vector<float> db(static_cast<size_t>(rows), std::nanf(""));
    cpu::bias_backward(dy.data(), db.data(), rows, inner, false);
    expect_close(db, want, 1e-6, 1e-5, "bias_backward");

    auto base = random_vector(size_t(rows), seed++, -3.f, 3.f);
    auto acc = base;
    cpu::bias_backward(dy.data(), acc.data(), rows, inner, true);
    for (size_t r = 0; r < size_t(rows); ++r) want[r] += base[r];
    expect_close(acc, want, 1e-6, 1e-5, "bias_backward accumulate");

    // Deterministic: a second run gives identical bits.
    std::vector<float> again(static_cast<size_t>(rows));
    cpu::bias_backward(dy.data(), again.data(), rows, inner, false);
    ASSERT_EQ(0, std::memcmp(again.data(), db.data(), size_t(rows) * sizeof(float)));
  }
}

}  // namespace
}  // namespace convnet

// One checker for every layer type (Caffe's habit): each registered type has cases below, and
// each case goes through the same checks:
//   - forward writes every output element (the output starts as NaN);
//   - backward against central finite differences, for every input that takes a gradient and
//     every parameter (a float64 reference too, where a case gives one);
//   - backward with accumulate=true adds to what the gradient buffer held;
//   - on a GPU (or under cuda_emu), forward and backward match the CPU on the same inputs.
// A registered type without a case fails `EveryRegisteredTypeHasACase`: adding a layer means
// adding its case here. The per-op tests stay where they add cases of their own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "convnet/device.h"
#include "convnet/gradcheck.h"
#include "convnet/layer.h"
#include "convnet/net.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// What a case's float64 reference gives: the scalar objective of the case's check (see
// LayerRun::objective) and its gradient with respect to input 0, from the formula.
struct Reference {
  double objective;
  std::vector<double> dinput0;
};

struct LayerCase {
  std::string label;          // names the case in failures
  std::string json;           // the layer's definition (its inputs named a, b, ...)
  std::vector<Shape> inputs;  // {C, H, W, N} each
  int labels_input = -1;      // this input holds class indices (no gradient)
  double step = 2e-3;         // finite-difference step
  // Optional float64 reference from the formula, given the inputs and the upstream weights r.
  std::function<Reference(const std::vector<std::vector<float>>&, const std::vector<float>&)>
      reference;
};

const std::vector<LayerCase>& cases() {
  static const std::vector<LayerCase> all = {
      {"conv",
       R"({"name": "l", "type": "conv", "inputs": ["a"], "filters": 4, "size": 3, "padding": 1, "stride": 2, "neuron": "tanh"})",
       {{3, 7, 7, 3}}},
      {"conv, two inputs in two groups",
       R"({"name": "l", "type": "conv", "inputs": ["a", "b"], "filters": 4, "size": 3, "groups": 2, "initB": 0.1})",
       {{2, 6, 6, 3}, {2, 6, 6, 3}}},
      {"fc",
       R"({"name": "l", "type": "fc", "inputs": ["a"], "outputs": 5, "neuron": "relu", "initB": 0.5})",
       {{3, 4, 4, 3}}},
      {"fc, two inputs, no bias",
       R"({"name": "l", "type": "fc", "inputs": ["a", "b"], "outputs": 3, "bias": false})",
       {{4, 1, 1, 3}, {2, 2, 2, 3}}},
      {"pool",
       R"({"name": "l", "type": "pool", "inputs": ["a"], "size": 3, "stride": 2})",
       {{3, 7, 7, 3}},
       -1,
       1e-3},
      {"pool, average, ceil",
       R"({"name": "l", "type": "pool", "inputs": ["a"], "size": 3, "stride": 2, "pool": "avg", "ceil": true})",
       {{3, 6, 6, 3}}},
      {"lrn",
       R"({"name": "l", "type": "lrn", "inputs": ["a"], "size": 5, "k": 1.0, "alpha": 0.5, "beta": 0.75})",
       {{8, 3, 3, 3}}},
      {"rnorm",
       R"({"name": "l", "type": "rnorm", "inputs": ["a"], "size": 3, "k": 1.0, "alpha": 0.3, "beta": 0.75})",
       {{3, 4, 5, 3}}},
      {"rnorm, even size wider than the image",
       R"({"name": "l", "type": "rnorm", "inputs": ["a"], "size": 6, "k": 2.0, "alpha": 0.2, "beta": 0.6})",
       {{2, 3, 5, 2}}},
      {"local",
       R"({"name": "l", "type": "local", "inputs": ["a"], "filters": 3, "size": 3, "padding": 1, "neuron": "tanh", "initB": 0.1})",
       {{2, 4, 5, 3}}},
      {"local, stride 2, ceil, chunks of one row, two inputs",
       R"({"name": "l", "type": "local", "inputs": ["a", "b"], "filters": 2, "size": 2, "stride": 2, "ceil": true, "chunk_rows": 1})",
       {{1, 5, 4, 2}, {2, 5, 4, 2}}},
      {"local, no bias",
       R"({"name": "l", "type": "local", "inputs": ["a"], "filters": 2, "size": 3, "stride": 2, "bias": false})",
       {{3, 5, 5, 2}}},
      {"neuron",
       R"({"name": "l", "type": "neuron", "inputs": ["a"], "neuron": "logistic"})",
       {{2, 3, 3, 3}}},
      {"neuron, leaky relu",
       R"({"name": "l", "type": "neuron", "inputs": ["a"], "neuron": "leaky_relu", "slope": 0.1})",
       {{2, 3, 3, 3}}},
      {"dropout",
       R"({"name": "l", "type": "dropout", "inputs": ["a"], "rate": 0.3})",
       {{4, 3, 3, 5}}},
      {"concat",
       R"({"name": "l", "type": "concat", "inputs": ["a", "b"]})",
       {{2, 3, 3, 3}, {3, 3, 3, 3}}},
      {"split",
       R"({"name": "l", "type": "split", "inputs": ["a"], "start": 1, "count": 2})",
       {{4, 3, 3, 3}}},
      {"sum",
       R"({"name": "l", "type": "sum", "inputs": ["a", "b"], "coeffs": [0.5, -2]})",
       {{2, 3, 3, 3}, {2, 3, 3, 3}}},
      {"softmax_cost",
       R"({"name": "l", "type": "softmax_cost", "inputs": ["a", "b"], "coeff": 0.7})",
       {{5, 1, 1, 4}, {1, 1, 1, 4}},
       1},
      {"sum2_cost",
       R"({"name": "l", "type": "sum2_cost", "inputs": ["a"], "coeff": 0.3})",
       {{3, 2, 2, 4}},
       -1,
       2e-3,
       [](const std::vector<std::vector<float>>& in, const std::vector<float>&) {
         // objective = coeff * mean over cases of sum x^2; d/dx = 2 coeff x / N
         const double coeff = 0.3, n = 4;
         Reference r{0, {}};
         for (float x : in[0]) {
           r.objective += coeff * double(x) * x / n;
           r.dinput0.push_back(2 * coeff * x / n);
         }
         return r;
       }},
  };
  return all;
}

// Types filled from outside have nothing to run; types whose names start with "test_" are
// registered by tests.
bool needs_case(const LayerType& t) {
  return !is_filled_from_outside(t.role()) && t.name().rfind("test_", 0) != 0;
}

// One layer built from a case on one device, with the case's inputs and parameters.
struct LayerRun {
  std::unique_ptr<Layer> layer;
  Workspace workspace;
  std::vector<Tensor> in;
  std::vector<float> r;  // upstream weights: a hidden layer's check is of sum(r * out)
  Tensor out;
  Device device;

  LayerRun(const LayerCase& c, Device dev, uint32_t seed) : workspace(dev), device(dev) {
    layer = make_layer(ModelSpec::from_json("[" + c.json + "]").layers.at(0));
    const Shape out_shape = layer->setup(c.inputs);
    for (size_t i = 0; i < layer->params().size(); ++i) {  // parameters start on the host
      Tensor& v = layer->params()[i].value;
      v.copy_from_host(
          random_vector(size_t(v.numel()), seed + 100 + uint32_t(i), -0.5f, 0.5f).data());
    }
    layer->place(dev, &workspace);
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      std::vector<float> v =
          random_vector(size_t(shape_numel(c.inputs[i])), seed + 17 * uint32_t(i));
      if (int(i) == c.labels_input) {
        const int classes = c.inputs[0][0] * c.inputs[0][1] * c.inputs[0][2];
        std::mt19937 rng(seed);
        for (float& x : v) x = float(rng() % unsigned(classes));
      }
      Tensor t(c.inputs[i], dev);
      t.copy_from_host(v.data());
      in.push_back(t);
    }
    r = random_vector(size_t(shape_numel(out_shape)), seed + 999);
    out = Tensor(out_shape, dev);
  }

  void forward() {
    out.fill(std::numeric_limits<float>::quiet_NaN());  // every element must be written
    layer->forward(in, out, PassContext{true, 11, 3});
  }

  // What the backward pass differentiates: a cost layer's weighted batch-mean cost, else
  // sum(r * out).
  double objective() {
    forward();
    if (layer->is_cost()) return layer->cost_coeff() * layer->cost_stats().cost_sum / out.dim(3);
    const std::vector<float> y = out.to_vector();
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double(r[i]) * y[i];
    return s;
  }

  // Input gradients (undefined for labels) after a backward with upstream r, each buffer first
  // filled with `start` and accumulated into when `accumulate`.
  std::vector<Tensor> backward(const LayerCase& c, bool accumulate, float start = 0.f) {
    forward();
    Tensor dout(out.shape(), device);
    dout.copy_from_host(r.data());
    std::vector<Tensor> din;
    for (size_t i = 0; i < in.size(); ++i) {
      if (int(i) == c.labels_input) {
        din.emplace_back();
        continue;
      }
      Tensor g(in[i].shape(), device);
      g.fill(accumulate ? start : std::numeric_limits<float>::quiet_NaN());
      din.push_back(g);
    }
    layer->backward(in, out, dout, din, std::vector<bool>(in.size(), accumulate),
                    PassContext{true, 11, 3});
    return din;
  }
};

// ||a - n|| / max(||a||, ||n||) over the checked elements (as gradcheck.h): a float32 difference
// that straddles a kink spoils single elements without meaning the gradient is wrong.
struct Verdict {
  std::string what;
  double relative_error = 0;
  double scale =
      0;  // max(||analytic||, ||numeric||): a check of zeros against zeros proves nothing
};

// Central differences of run.objective() over up to `samples` elements of tensor t, against
// `analytic`.
Verdict finite_difference(LayerRun& run, Tensor& t, const std::vector<float>& analytic, double step,
                          const std::string& what, uint32_t seed, int samples = 48) {
  std::vector<float> value = t.to_vector();
  std::vector<size_t> idx(value.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), std::mt19937(seed));
  idx.resize(std::min(idx.size(), size_t(samples)));
  double diff2 = 0, a2 = 0, n2 = 0;
  for (size_t i : idx) {
    const float keep = value[i];
    const float up = keep + float(step), down = keep - float(step);
    value[i] = up;
    t.copy_from_host(value.data());
    const double f_up = run.objective();
    value[i] = down;
    t.copy_from_host(value.data());
    const double f_down = run.objective();
    value[i] = keep;
    t.copy_from_host(value.data());
    const double numeric = (f_up - f_down) / (double(up) - double(down));
    diff2 += (analytic[i] - numeric) * (analytic[i] - numeric);
    a2 += double(analytic[i]) * analytic[i];
    n2 += numeric * numeric;
  }
  const double scale = std::sqrt(std::max(a2, n2));
  return {what, std::sqrt(diff2) / std::max(scale, 1e-12), scale};
}

// Every gradient of a case against finite differences: one verdict per input that takes a
// gradient and per parameter.
std::vector<Verdict> check_backward(const LayerCase& c, uint32_t seed) {
  LayerRun run(c, Device::cpu(), seed);
  std::vector<Tensor> din = run.backward(c, false);
  std::vector<std::vector<float>> grads;
  for (const Tensor& g : din) grads.push_back(g.defined() ? g.to_vector() : std::vector<float>());
  std::vector<std::vector<float>> param_grads;
  for (Param& p : run.layer->params()) param_grads.push_back(p.grad.to_vector());
  std::vector<Verdict> out;
  for (size_t i = 0; i < run.in.size(); ++i)
    if (din[i].defined())
      out.push_back(finite_difference(run, run.in[i], grads[i], c.step,
                                      "input " + std::to_string(i), seed + uint32_t(i)));
  for (size_t i = 0; i < run.layer->params().size(); ++i) {
    Param& p = run.layer->params()[i];
    out.push_back(
        finite_difference(run, p.value, param_grads[i], c.step, p.name, seed + 50 + uint32_t(i)));
  }
  return out;
}

constexpr double kTolerance = 1e-2;

class Layers : public ::testing::TestWithParam<size_t> {
 protected:
  const LayerCase& c() const { return cases()[GetParam()]; }
};

TEST(LayerCases, EveryRegisteredTypeHasACase) {
  for (const LayerType* t : registered_layer_types()) {
    if (!needs_case(*t)) continue;
    const bool found = std::any_of(cases().begin(), cases().end(), [&](const LayerCase& c) {
      return ModelSpec::from_json("[" + c.json + "]").layers.at(0).type == t->name();
    });
    EXPECT_TRUE(found) << "layer type '" << t->name()
                       << "' has no case in tests/cpp/test_layers.cpp";
  }
}

TEST_P(Layers, ForwardWritesEveryOutput) {
  LayerRun run(c(), Device::cpu(), 1);
  run.forward();
  for (float y : run.out.to_vector()) ASSERT_FALSE(std::isnan(y)) << c().label;
}

TEST_P(Layers, BackwardMatchesFiniteDifferences) {
  for (const Verdict& v : check_backward(c(), 2)) {
    EXPECT_LE(v.relative_error, kTolerance) << c().label << ", " << v.what;
    EXPECT_GT(v.scale, 1e-3) << c().label << ", " << v.what
                             << ": the checked gradient is all zeros";
    if (std::getenv("CONVNET_SHOW_VERDICTS"))
      std::printf("%-32s %-12s %.2e (norm %.2e)\n", c().label.c_str(), v.what.c_str(),
                  v.relative_error, v.scale);
  }
}

TEST_P(Layers, BackwardAccumulatesIntoWhatWasThere) {
  LayerRun run(c(), Device::cpu(), 3);
  const std::vector<Tensor> fresh = run.backward(c(), false);
  const std::vector<Tensor> added = run.backward(c(), true, 0.25f);
  for (size_t i = 0; i < fresh.size(); ++i) {
    if (!fresh[i].defined()) continue;
    const std::vector<float> g = fresh[i].to_vector(), a = added[i].to_vector();
    for (size_t k = 0; k < g.size(); ++k)
      ASSERT_NEAR(a[k], 0.25f + g[k], 1e-6 * (1 + std::fabs(g[k])))
          << c().label << ", input " << i << "[" << k << "]";
  }
}

// Where a case gives a float64 reference (the other types have theirs in the per-op tests).
TEST(LayerCases, MatchTheirFloat64References) {
  int checked = 0;
  for (const LayerCase& c : cases()) {
    if (!c.reference) continue;
    LayerRun run(c, Device::cpu(), 4);
    std::vector<std::vector<float>> in;
    for (const Tensor& t : run.in) in.push_back(t.to_vector());
    const Reference want = c.reference(in, run.r);
    EXPECT_NEAR(run.objective(), want.objective, 1e-6 * std::max(1.0, std::fabs(want.objective)))
        << c.label;
    expect_close(run.backward(c, false)[0].to_vector(), want.dinput0, 1e-5, 1e-7, c.label.c_str());
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// On a GPU, or under cuda_emu: the same inputs and parameters give the CPU's numbers.
TEST_P(Layers, CudaMatchesCpu) {
  if (cuda_device_count() == 0)
    GTEST_SKIP() << "no CUDA device ("
                 << (cuda_compiled() ? "none visible" : "no CUDA backend in this build") << ")";
  LayerRun cpu_run(c(), Device::cpu(), 5), gpu_run(c(), Device::cuda(0), 5);
  auto close = [&](const Tensor& want, const Tensor& got, const std::string& what) {
    const std::vector<float> w = want.to_vector(), g = got.to_vector();
    ASSERT_EQ(w.size(), g.size());
    double diff2 = 0, w2 = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_FALSE(std::isnan(g[i])) << c().label << ", " << what << "[" << i << "]";
      diff2 += (double(w[i]) - g[i]) * (double(w[i]) - g[i]);
      w2 += double(w[i]) * w[i];
    }
    EXPECT_LE(std::sqrt(diff2), 1e-5 * std::max(std::sqrt(w2), 1e-6)) << c().label << ", " << what;
  };
  const std::vector<Tensor> want = cpu_run.backward(c(), false), got = gpu_run.backward(c(), false);
  close(cpu_run.out, gpu_run.out, "output");
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i].defined()) close(want[i], got[i], "input gradient " + std::to_string(i));
  for (size_t i = 0; i < cpu_run.layer->params().size(); ++i)
    close(cpu_run.layer->params()[i].grad, gpu_run.layer->params()[i].grad,
          cpu_run.layer->params()[i].name + " gradient");
  if (cpu_run.layer->is_cost())
    EXPECT_NEAR(gpu_run.layer->cost_stats().cost_sum, cpu_run.layer->cost_stats().cost_sum,
                1e-5 * std::fabs(cpu_run.layer->cost_stats().cost_sum));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, Layers, ::testing::Range(size_t(0), cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           std::string name;
                           for (char ch : cases()[info.param].label)
                             name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name;
                         });

// ---- the checkers must be able to fail ----

// A layer whose backward pass is wrong: forward doubles its input, backward triples the
// gradient. Registered by this test only ("test_" types need no case).
class WrongGradientLayer : public Layer {
 public:
  using Layer::Layer;
  Shape setup(const std::vector<Shape>& in) override { return in[0]; }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    axpby(2.f, in[0], out, false);
  }
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (din[0].defined()) axpby(3.f, dout, din[0], accumulate[0]);
  }
};
CONVNET_REGISTER_LAYER(
    LayerType("test_wrong_gradient", "doubles forward, triples backward (a broken layer)")
        .make<WrongGradientLayer>());

TEST(LayerCheckers, TheLayerCheckerFindsAWrongGradient) {
  const LayerCase broken{
      "broken", R"({"name": "l", "type": "test_wrong_gradient", "inputs": ["a"]})", {{2, 3, 3, 2}}};
  const std::vector<Verdict> v = check_backward(broken, 6);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NEAR(v[0].relative_error, 1.0 / 3.0, 1e-3);  // |3 - 2| / 3
  EXPECT_GT(v[0].relative_error, kTolerance);
}

// The whole-net checker (cuda-convnet's check-grads, convnet.check_gradients) flags the
// parameters below the broken layer, and passes the same net without it.
TEST(LayerCheckers, TheNetCheckerFindsAWrongGradient) {
  auto model = [](const std::string& middle) {
    return ModelSpec::from_json(R"([
      {"name": "data", "type": "input", "channels": 2, "size": 5},
      {"name": "labels", "type": "labels"},
      {"name": "fc1", "type": "fc", "inputs": ["data"], "outputs": 6, "neuron": "tanh", "initW": 0.3},
      {"name": "mid", "type": ")" +
                                middle + R"(", "inputs": ["fc1"]},
      {"name": "fc2", "type": "fc", "inputs": ["mid"], "outputs": 3, "initW": 0.3},
      {"name": "cost", "type": "softmax_cost", "inputs": ["fc2", "labels"]}])");
  };
  for (const std::string middle : {"neuron", "test_wrong_gradient"}) {
    Net net(model(middle), {Device::cpu()}, 3);
    Tensor x({2, 5, 5, 4}, Device::cpu()), y({4}, Device::cpu());
    x.copy_from_host(random_vector(200, 8).data());
    const std::vector<float> labels = {0, 2, 1, 2};
    y.copy_from_host(labels.data());
    net.set_input("data", x);
    net.set_input("labels", y);
    GradCheckOptions o;
    o.step = 1e-2;
    for (const GradCheckResult& r : check_gradients(net, o)) {
      const bool below_the_broken_layer = middle != "neuron" && r.param.rfind("fc1.", 0) == 0;
      EXPECT_EQ(r.ok, !below_the_broken_layer)
          << middle << ": " << r.param << " relative error " << r.relative_error;
    }
  }
}

}  // namespace
}  // namespace convnet::testing

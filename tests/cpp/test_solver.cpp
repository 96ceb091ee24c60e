// The solvers: the CPU Nesterov and AdamW kernels against float64 references written from the
// formulas of convnet/ops.h, the dispatcher's checks, solver options (names, ranges), and
// Net::set_solver's state handling.
#include <cmath>
#include <string>
#include <vector>

#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/ops.h"
#include "convnet/solver.h"
#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::expect_throw_containing;
using testing::random_vector;
using testing::to_double;

// ---- float64 references, from the formulas ----

// v <- m v - wd lr w - lr g;  w <- w + v (the paper's SGD).
void sgd_ref(std::vector<double>& w, std::vector<double>& v, const std::vector<double>& g, double lr,
             double m, double wd) {
  for (size_t i = 0; i < w.size(); ++i) {
    v[i] = m * v[i] - wd * lr * w[i] - lr * g[i];
    w[i] += v[i];
  }
}

// s = wd lr w + lr g;  v <- m v - s;  w <- w + m v - s.
void nesterov_ref(std::vector<double>& w, std::vector<double>& v, const std::vector<double>& g,
                  double lr, double m, double wd) {
  for (size_t i = 0; i < w.size(); ++i) {
    const double s = wd * lr * w[i] + lr * g[i];
    v[i] = m * v[i] - s;
    w[i] += m * v[i] - s;
  }
}

// w <- w - lr wd w;  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
// w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
void adamw_ref(std::vector<double>& w, std::vector<double>& m, std::vector<double>& v,
               const std::vector<double>& g, double lr, double wd, double b1, double b2,
               double eps, int t) {
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] -= lr * wd * w[i];
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
    w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

Tensor cpu_tensor(const std::vector<float>& v) {
  Tensor t({int(v.size())}, Device::cpu());
  t.copy_from_host(v.data());
  return t;
}

TEST(CpuNesterov, TwoStepsByHand) {
  // w = 1, v = 0, lr 0.1, momentum 0.9, decay 0.1.
  // step 1, g 0.5: s = 0.01 + 0.05 = 0.06; v = -0.06; w = 1 + 0.9*-0.06 - 0.06 = 0.886
  // step 2, g 0.2: s = 0.00886 + 0.02 = 0.02886; v = -0.054 - 0.02886 = -0.08286;
  //                w = 0.886 + 0.9*-0.08286 - 0.02886 = 0.782566
  std::vector<float> w = {1.f}, v = {0.f};
  const float g1 = 0.5f, g2 = 0.2f;
  cpu::nesterov_update(w.data(), &g1, v.data(), 1, 0.1f, 0.9f, 0.1f);
  EXPECT_NEAR(v[0], -0.06, 1e-7);
  EXPECT_NEAR(w[0], 0.886, 1e-7);
  cpu::nesterov_update(w.data(), &g2, v.data(), 1, 0.1f, 0.9f, 0.1f);
  EXPECT_NEAR(v[0], -0.08286, 1e-7);
  EXPECT_NEAR(w[0], 0.782566, 1e-7);
}

// The two rules that keep a velocity, each kernel against its float64 formula.
struct MomentumRule {
  const char* name;
  void (*kernel)(float* w, const float* grad, float* v, int64_t n, float lr, float momentum, float decay);
  void (*reference)(std::vector<double>& w, std::vector<double>& v, const std::vector<double>& g, double lr,
                    double m, double wd);
};
const MomentumRule kMomentumRules[] = {{"sgd", cpu::sgd_update, sgd_ref},
                                       {"nesterov", cpu::nesterov_update, nesterov_ref}};

TEST(CpuMomentumRules, StepsMatchReference) {
  struct Hyper {
    float lr, momentum, decay;
  };
  // AlexNet's values, and larger ones under which a wrong decay or momentum term shows.
  const Hyper hypers[] = {{0.01f, 0.9f, 0.0005f}, {0.3f, 0.5f, 0.2f}};
  for (const MomentumRule& rule : kMomentumRules) {
    uint32_t seed = 1;
    for (size_t n : {size_t(1), size_t(7), size_t(1001), size_t(100003)}) {
      for (const Hyper& h : hypers) {
        SCOPED_TRACE(std::string(rule.name) + " n=" + std::to_string(n) + " lr=" + std::to_string(h.lr));
        auto w = random_vector(n, seed++);
        auto v = random_vector(n, seed++, -0.1f, 0.1f);  // a nonzero velocity from earlier steps
        auto wd = to_double(w), vd = to_double(v);
        for (int step = 0; step < 3; ++step) {
          const auto g = random_vector(n, seed++);
          rule.kernel(w.data(), g.data(), v.data(), int64_t(n), h.lr, h.momentum, h.decay);
          rule.reference(wd, vd, to_double(g), h.lr, h.momentum, h.decay);
          expect_close(v, vd, 1e-5, 1e-7, "velocity");
          expect_close(w, wd, 1e-5, 1e-7, "weights");
        }
      }
    }
  }
}

TEST(CpuAdamW, FirstStepByHand) {
  // t = 1: mhat = g, vhat = g^2, so w <- w (1 - lr wd) - lr g / (|g| + eps).
  // w = 1, g = 0.5, lr 0.1, wd 0.1, eps 1e-8: w = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.89000000200
  Tensor w = cpu_tensor({1.f}), g = cpu_tensor({0.5f}), m = cpu_tensor({0.f}), v = cpu_tensor({0.f});
  AdamWHyper h;
  h.lr = 0.1f;
  h.weight_decay = 0.1f;
  h.step = 1;
  adamw_update(w, g, m, v, h);
  EXPECT_NEAR(w.to_vector()[0], 0.89, 1e-7);
  // 1 - beta rounded once from double: float's 1 - 0.9f would be 0.10000002.
  EXPECT_NEAR(m.to_vector()[0], 0.05, 1e-9);      // (1 - 0.9) * 0.5
  EXPECT_NEAR(v.to_vector()[0], 0.00025, 3e-11);  // (1 - 0.999) * 0.25, to a float ulp
}

TEST(CpuAdamW, StepsMatchReference) {
  struct Hyper {
    float lr, wd;
    double b1, b2;
    float eps;
  };
  // PyTorch's defaults; and betas far from them with a large eps, under which a wrong bias
  // correction or a misplaced eps shows.
  const Hyper hypers[] = {{0.001f, 0.01f, 0.9, 0.999, 1e-8f}, {0.05f, 0.3f, 0.5, 0.8, 1e-2f}};
  uint32_t seed = 7;
  for (size_t n : {size_t(1), size_t(9), size_t(1001), size_t(100003)}) {
    for (const Hyper& hp : hypers) {
      SCOPED_TRACE("n=" + std::to_string(n) + " lr=" + std::to_string(hp.lr));
      auto w = random_vector(n, seed++);
      std::vector<float> m(n, 0.f), v(n, 0.f);
      auto wd = to_double(w), md = to_double(m), vd = to_double(v);
      Tensor tw = cpu_tensor(w), tm = cpu_tensor(m), tv = cpu_tensor(v);
      for (int t = 1; t <= 4; ++t) {
        const auto g = random_vector(n, seed++);
        AdamWHyper h{hp.lr, hp.wd, hp.b1, hp.b2, hp.eps, uint64_t(t)};
        adamw_update(tw, cpu_tensor(g), tm, tv, h);
        adamw_ref(wd, md, vd, to_double(g), hp.lr, hp.wd, hp.b1, hp.b2, hp.eps, t);
        // Absolute tolerances at float rounding of the terms (|g| < 1): m and v may cancel.
        expect_close(tm.to_vector(), md, 1e-5, 1e-7, "m");
        expect_close(tv.to_vector(), vd, 1e-5, 1e-7, "v");
        expect_close(tw.to_vector(), wd, 1e-5, 1e-6, "weights");
      }
    }
  }
}

TEST(Solver, DispatcherChecksShapesAndStep) {
  Tensor w = cpu_tensor({1.f, 2.f}), g = cpu_tensor({1.f, 2.f}), m = cpu_tensor({0.f, 0.f});
  Tensor short_v = cpu_tensor({0.f});
  expect_throw_containing<ValueError>([&] { nesterov_update(w, g, short_v, 0.1f, 0.9f, 0.f); },
                                      "nesterov_update: shape mismatch");
  expect_throw_containing<ValueError>([&] { adamw_update(w, g, m, short_v, AdamWHyper{}); },
                                      "adamw_update: shape mismatch");
  Tensor v = cpu_tensor({0.f, 0.f});
  AdamWHyper h;
  h.step = 0;
  expect_throw_containing<ValueError>([&] { adamw_update(w, g, m, v, h); }, "step must be >= 1");
}

// ---- options ----

TEST(Solver, UnknownNameListsTheKnownOnes) {
  expect_throw_containing<ValueError>([] { Solver::make(SolverOptions{"adam"}); },
                                      "unknown solver 'adam' (known: sgd, nesterov, adamw)");
}

TEST(Solver, BetasMustBeInZeroToOneAndEpsPositive) {
  for (double bad : {-0.1, 1.0, 1.5, std::nan("")}) {
    SolverOptions o{"adamw"};
    o.beta1 = bad;
    expect_throw_containing<ValueError>([&] { o.validate(); }, "beta1 must be in [0, 1)");
    o = SolverOptions{"adamw"};
    o.beta2 = bad;
    expect_throw_containing<ValueError>([&] { o.validate(); }, "beta2 must be in [0, 1)");
  }
  SolverOptions o{"adamw"};
  o.beta1 = 0.0;  // allowed: RMSprop-like
  EXPECT_NO_THROW(o.validate());
  o.eps = 0;
  expect_throw_containing<ValueError>([&] { o.validate(); }, "eps must be > 0");
}

TEST(Solver, JsonRoundTripAndDefaults) {
  const SolverOptions d;
  EXPECT_EQ(d.name, "sgd");
  EXPECT_EQ(d.beta1, 0.9);
  EXPECT_EQ(d.beta2, 0.999);
  EXPECT_EQ(d.eps, 1e-8);
  SolverOptions o{"adamw", 0.8, 0.99, 1e-6};
  EXPECT_TRUE(SolverOptions::from_json(o.to_json()) == o);
  expect_throw_containing<ValueError>(
      [] { SolverOptions::from_json({{"name", "adamw"}, {"beta3", 0.5}}); }, "'beta3'");
}

// ---- the net's solver ----

const char* kModel = R"([
  {"name":"data","type":"input","channels":2,"size":4},
  {"name":"labels","type":"labels"},
  {"name":"f1","type":"fc","inputs":["data"],"outputs":5,"neuron":"tanh","initW":0.3,"wc":0.01},
  {"name":"f2","type":"fc","inputs":["f1"],"outputs":3,"initW":0.3},
  {"name":"cost","type":"softmax_cost","inputs":["f2","labels"]}
])";

void step(Net& net, uint32_t seed) {
  Tensor x({2, 4, 4, 6}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed).data());
  net.set_input("data", x);
  std::vector<float> y = {0, 1, 2, 0, 1, 2};
  Tensor labels({6}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
  net.forward(true);
  net.backward();
  net.update();
}

TEST(NetSolver, StateFollowsTheSolver) {
  Net net(ModelSpec::from_json(kModel));
  EXPECT_EQ(net.solver().name(), "sgd");
  Param& w = net.param("f1.weights");
  EXPECT_EQ(w.state.size(), 1u);
  EXPECT_TRUE(w.state.count("velocity"));
  net.set_solver(SolverOptions{"adamw"});
  EXPECT_EQ(w.state.size(), 2u);
  EXPECT_TRUE(w.state.count("m") && w.state.count("v"));
  expect_throw_containing<ValueError>([&] { w.state_tensor("velocity"); },
                                      "parameter 'f1.weights' has no solver state 'velocity' (it has: m, v)");
  step(net, 1);
  step(net, 2);
  EXPECT_EQ(net.solver().step(), 2u);
  // The same solver with other betas keeps the state and the counter.
  const auto m = w.state_tensor("m").to_vector();
  net.set_solver(SolverOptions{"adamw", 0.5, 0.9, 1e-6});
  EXPECT_EQ(w.state_tensor("m").to_vector(), m);
  EXPECT_EQ(net.solver().step(), 2u);
  EXPECT_EQ(net.solver().options().beta1, 0.5);
  // An invalid choice changes nothing.
  EXPECT_THROW(net.set_solver(SolverOptions{"adamw", 1.0}), ValueError);
  EXPECT_EQ(net.solver().options().beta1, 0.5);
  // Another solver starts afresh.
  net.set_solver(SolverOptions{"nesterov"});
  EXPECT_EQ(net.solver().step(), 0u);
  const auto v = w.state_tensor("velocity").to_vector();
  EXPECT_EQ(v, std::vector<float>(v.size(), 0.f));
}

TEST(NetSolver, NetUpdateAppliesTheChosenRuleWithEachParametersHyperparameters) {
  // One update of f1.weights through the net equals the float64 reference with its own lr, wc
  // and momentum times the lr scale.
  for (const std::string& name : {"nesterov", "adamw"}) {
    SCOPED_TRACE(name);
    Net net(ModelSpec::from_json(kModel));
    net.set_solver(SolverOptions{name});
    Param& w = net.param("f1.weights");
    auto wd = to_double(w.value.to_vector());
    std::vector<double> s1(wd.size(), 0.0), s2(wd.size(), 0.0);
    for (int t = 1; t <= 2; ++t) {
      Tensor x({2, 4, 4, 6}, Device::cpu());
      x.copy_from_host(random_vector(size_t(x.numel()), uint32_t(t)).data());
      net.set_input("data", x);
      std::vector<float> y = {0, 1, 2, 0, 1, 2};
      Tensor labels({6}, Device::cpu());
      labels.copy_from_host(y.data());
      net.set_input("labels", labels);
      net.forward(true);
      net.backward();
      const auto g = to_double(w.grad.to_vector());
      const float lr = w.lr * 0.5f;
      net.update(0.5f);
      if (name == "nesterov") nesterov_ref(wd, s1, g, lr, w.momentum, w.weight_decay);
      else adamw_ref(wd, s1, s2, g, lr, w.weight_decay, 0.9, 0.999, 1e-8, t);
      expect_close(w.value.to_vector(), wd, 1e-5, 1e-7, "weights");
    }
  }
}

}  // namespace
}  // namespace convnet

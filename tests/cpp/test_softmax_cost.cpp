// CPU softmax + multinomial logistic cost: probabilities, cost and top-1/top-5 error counts
// against float64 references and hand-made cases (ties, K < 5, batch 1), and the gradient
// against finite differences of the mean cost.
#include <algorithm>
#include <cmath>
#include <cstring>
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

// Layout {K, N}: element (k, n) at k * N + n.
struct Ref {
  std::vector<double> probs;
  double cost_sum = 0;
  int64_t top1 = 0, top5 = 0;
};

// Softmax per column, -log p[label], and top-k by counting classes with a strictly larger logit
// (exp is increasing, so that is the same as a strictly larger probability).
Ref ref_softmax_cost(const std::vector<double>& x, const std::vector<int>& labels, int K, int N) {
  Ref r;
  r.probs.resize(size_t(K) * size_t(N));
  const int topk = std::min(5, K);
  for (int n = 0; n < N; ++n) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int k = 0; k < K; ++k) mx = std::max(mx, x[size_t(k * N + n)]);
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += std::exp(x[size_t(k * N + n)] - mx);
    for (int k = 0; k < K; ++k) r.probs[size_t(k * N + n)] = std::exp(x[size_t(k * N + n)] - mx) / sum;
    const double xl = x[size_t(labels[size_t(n)] * N + n)];
    r.cost_sum += -(xl - mx - std::log(sum));
    int above = 0;
    for (int k = 0; k < K; ++k) above += x[size_t(k * N + n)] > xl;
    r.top1 += above >= 1;
    r.top5 += above >= topk;
  }
  return r;
}

std::vector<int> random_labels(int N, int K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, K - 1);
  std::vector<int> l(static_cast<size_t>(N));
  for (auto& v : l) v = d(rng);
  return l;
}

// The CPU kernel's per-case results, summed as every backend sums them.
CostStats cpu_forward(const float* logits, const float* labels, float* probs, int K, int N) {
  std::vector<double> cost(static_cast<size_t>(N));
  std::vector<int32_t> flags(static_cast<size_t>(N));
  cpu::softmax_cost_forward(logits, labels, probs, K, N, cost.data(), flags.data());
  return cpu::sum_cost_cases(cost.data(), flags.data(), N);
}

std::vector<float> as_float(const std::vector<int>& v) { return std::vector<float>(v.begin(), v.end()); }

CostStats forward(const std::vector<float>& logits, const std::vector<int>& labels, int K, int N,
                  std::vector<float>& probs) {
  probs.assign(size_t(K) * size_t(N), std::nanf(""));
  auto lf = as_float(labels);
  return cpu_forward(logits.data(), lf.data(), probs.data(), K, N);
}

TEST(CpuSoftmaxCost, ForwardMatchesReference) {
  const std::vector<std::pair<int, int>> shapes = {{1, 1}, {2, 1},  {3, 5},    {5, 7},
                                                   {10, 1}, {7, 33}, {1000, 128}, {13, 3001}};
  uint32_t seed = 1;
  for (auto [K, N] : shapes) {
    SCOPED_TRACE("K=" + std::to_string(K) + " N=" + std::to_string(N));
    auto logits = random_vector(size_t(K) * size_t(N), seed++, -5.f, 5.f);
    auto labels = random_labels(N, K, seed++);
    std::vector<float> probs;
    CostStats st = forward(logits, labels, K, N, probs);
    Ref r = ref_softmax_cost(to_double(logits), labels, K, N);
    expect_close(probs, r.probs, 1e-5, 1e-9, "probs");
    EXPECT_NEAR(st.cost_sum, r.cost_sum, 1e-6 * std::fabs(r.cost_sum) + 1e-6);
    EXPECT_EQ(st.top1_errors, r.top1);
    EXPECT_EQ(st.top5_errors, r.top5);
    // Columns sum to 1.
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += probs[size_t(k * N + n)];
      ASSERT_NEAR(s, 1.0, 1e-5) << "column " << n;
    }
  }
}

// Logits far from zero would overflow exp() without the max subtraction, and a label whose
// probability underflows to 0 must still get its finite cost from the log-sum-exp.
TEST(CpuSoftmaxCost, ForwardIsNumericallyStable) {
  const int K = 4, N = 3;
  std::vector<float> logits = {1000.f, -1000.f, 50.f,   //
                               1001.f, -999.5f, -50.f,  //
                               999.f,  -1002.f, 0.f,    //
                               998.f,  -1003.f, 10.f};
  std::vector<int> labels = {3, 0, 1};  // the last label's probability is e^-100, ~4e-44
  std::vector<float> probs;
  CostStats st = forward(logits, labels, K, N, probs);
  Ref r = ref_softmax_cost(to_double(logits), labels, K, N);
  for (float p : probs) ASSERT_TRUE(std::isfinite(p));
  expect_close(probs, r.probs, 1e-5, 1e-30, "probs");
  EXPECT_NEAR(st.cost_sum, r.cost_sum, 1e-6 * r.cost_sum);
  EXPECT_GT(st.cost_sum, 100.0);  // dominated by the third case's -log(e^-100) = 100
  EXPECT_EQ(st.top1_errors, 3);
  EXPECT_EQ(st.top5_errors, 0);
}

TEST(CpuSoftmaxCost, UniformLogitsCostLogK) {
  const int K = 7, N = 2;
  std::vector<float> logits(static_cast<size_t>(K * N), 0.25f);
  std::vector<float> probs;
  CostStats st = forward(logits, {6, 0}, K, N, probs);
  EXPECT_NEAR(st.cost_sum, 2 * std::log(7.0), 1e-6);
  for (float p : probs) EXPECT_NEAR(p, 1.0 / 7, 1e-7);
  // All tied: no class is strictly more probable, so neither case is an error.
  EXPECT_EQ(st.top1_errors, 0);
  EXPECT_EQ(st.top5_errors, 0);
}

// Hand-made rankings, one case (column) each, K = 8.
TEST(CpuSoftmaxCost, TopKCountsWithTies) {
  const int K = 8;
  struct Case {
    std::vector<float> logits;  // K values
    int label;
    bool top1_err, top5_err;
    const char* what;
  };
  const std::vector<Case> cases = {
      {{0, 1, 2, 3, 4, 5, 6, 7}, 7, false, false, "unique argmax"},
      {{0, 1, 2, 3, 4, 5, 7, 7}, 6, false, false, "tied for first"},
      {{0, 1, 2, 3, 4, 5, 6, 7}, 6, true, false, "second"},
      {{0, 1, 2, 3, 4, 5, 6, 7}, 3, true, false, "fifth"},
      {{0, 1, 2, 3, 4, 5, 6, 7}, 2, true, true, "sixth"},
      {{0, 1, 3, 3, 3, 5, 6, 7}, 2, true, false, "tied with fifth and sixth: 4 strictly above"},
      {{3, 3, 3, 3, 3, 3, 9, 3}, 0, true, false, "second, tied with six others"},
      {{0, 1, 2, 5, 5, 5, 5, 5}, 0, true, true, "five strictly above"},
      {{0, 1, 2, 3, 4, 5, 6, 7}, 0, true, true, "last"},
  };
  const int N = int(cases.size());
  std::vector<float> logits(static_cast<size_t>(K * N));
  std::vector<int> labels;
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) logits[size_t(k * N + n)] = cases[size_t(n)].logits[size_t(k)];
    labels.push_back(cases[size_t(n)].label);
  }
  std::vector<float> probs;
  CostStats all = forward(logits, labels, K, N, probs);
  int64_t want1 = 0, want5 = 0;
  for (int n = 0; n < N; ++n) {
    const Case& c = cases[size_t(n)];
    want1 += c.top1_err;
    want5 += c.top5_err;
    // Each case alone, batch 1, so a miscount names its case.
    std::vector<float> p1;
    CostStats one = forward(c.logits, {c.label}, K, 1, p1);
    EXPECT_EQ(one.top1_errors, int64_t(c.top1_err)) << c.what;
    EXPECT_EQ(one.top5_errors, int64_t(c.top5_err)) << c.what;
  }
  EXPECT_EQ(all.top1_errors, want1);
  EXPECT_EQ(all.top5_errors, want5);
}

// With K < 5 classes top-5 is top-K: never an error.
TEST(CpuSoftmaxCost, TopKWithFewerThanFiveClasses) {
  for (int K : {1, 2, 3, 4}) {
    SCOPED_TRACE("K=" + std::to_string(K));
    std::vector<float> logits(static_cast<size_t>(K));
    for (int k = 0; k < K; ++k) logits[size_t(k)] = float(K - k);  // class 0 most probable
    std::vector<float> probs;
    CostStats last = forward(logits, {K - 1}, K, 1, probs);
    EXPECT_EQ(last.top1_errors, K > 1 ? 1 : 0);
    EXPECT_EQ(last.top5_errors, 0);
    CostStats first = forward(logits, {0}, K, 1, probs);
    EXPECT_EQ(first.top1_errors, 0);
    EXPECT_EQ(first.top5_errors, 0);
    if (K == 1) {
      EXPECT_EQ(first.cost_sum, 0.0);
      EXPECT_EQ(probs[0], 1.f);
    }
  }
}

// dlogits from the backward pass with scale = 1/N against finite differences of the float64
// mean cost (1/N) sum_n -log softmax(x)[label_n, n].
TEST(CpuSoftmaxCost, BackwardMatchesFiniteDifferences) {
  const std::vector<std::pair<int, int>> shapes = {{1, 1}, {2, 1}, {3, 4}, {6, 1}, {11, 7}};
  uint32_t seed = 100;
  for (const auto& shape : shapes) {
    const int K = shape.first, N = shape.second;  // named copies: a lambda below captures them
    SCOPED_TRACE("K=" + std::to_string(K) + " N=" + std::to_string(N));
    auto logits = random_vector(size_t(K) * size_t(N), seed++, -3.f, 3.f);
    auto labels = random_labels(N, K, seed++);
    auto lf = as_float(labels);
    std::vector<float> probs;
    forward(logits, labels, K, N, probs);
    const float scale = 1.f / float(N);
    std::vector<float> d(probs.size(), std::nanf(""));  // garbage: must not be read
    cpu::softmax_cost_backward(probs.data(), lf.data(), scale, d.data(), K, N, false);
    auto want = numeric_gradient(
        [&](const std::vector<double>& x) { return ref_softmax_cost(x, labels, K, N).cost_sum / N; },
        to_double(logits));
    expect_close(d, want, 1e-4, 1e-6, "dlogits");

    auto base = random_vector(probs.size(), seed++, -2.f, 2.f);
    auto acc = base;
    cpu::softmax_cost_backward(probs.data(), lf.data(), scale, acc.data(), K, N, true);
    for (size_t i = 0; i < want.size(); ++i) want[i] += base[i];
    expect_close(acc, want, 1e-4, 1e-6, "dlogits accumulate");
  }
}

// The formula directly, on a size that takes the parallel path and an arbitrary scale.
TEST(CpuSoftmaxCost, BackwardLargeMatchesFormula) {
  const int K = 1000, N = 129;
  auto logits = random_vector(size_t(K) * size_t(N), 7, -4.f, 4.f);
  auto labels = random_labels(N, K, 8);
  auto lf = as_float(labels);
  std::vector<float> probs;
  forward(logits, labels, K, N, probs);
  const float scale = 0.37f;
  std::vector<float> d(probs.size(), std::nanf(""));
  cpu::softmax_cost_backward(probs.data(), lf.data(), scale, d.data(), K, N, false);
  std::vector<double> want(probs.size());
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) {
      size_t i = size_t(k * N + n);
      want[i] = double(scale) * (double(probs[i]) - (labels[size_t(n)] == k ? 1.0 : 0.0));
    }
  expect_close(d, want, 1e-6, 1e-12, "dlogits large");
}

// probs may be the logits buffer itself.
TEST(CpuSoftmaxCost, ForwardInPlace) {
  const int K = 9, N = 5;
  auto logits = random_vector(size_t(K * N), 11, -3.f, 3.f);
  auto labels = random_labels(N, K, 12);
  std::vector<float> probs;
  CostStats a = forward(logits, labels, K, N, probs);
  auto buf = logits;
  auto lf = as_float(labels);
  CostStats b = cpu_forward(buf.data(), lf.data(), buf.data(), K, N);
  EXPECT_EQ(a.cost_sum, b.cost_sum);
  EXPECT_EQ(a.top1_errors, b.top1_errors);
  EXPECT_EQ(a.top5_errors, b.top5_errors);
  EXPECT_EQ(buf, probs);
}

// The net's form: per-case results left in a buffer, summed by cost_stats, equal the one call.
TEST(SoftmaxCostOp, TwoHalvesEqualTheWholeAndCheckTheirBuffer) {
  const int K = 7, N = 9;
  Tensor logits({K, 1, 1, N}, Device::cpu()), labels({N}, Device::cpu());
  logits.copy_from_host(random_vector(size_t(K * N), 21, -4.f, 4.f).data());
  labels.copy_from_host(as_float(random_labels(N, K, 22)).data());
  Tensor p1({K, 1, 1, N}, Device::cpu()), p2({K, 1, 1, N}, Device::cpu());
  const CostStats whole = softmax_cost_forward(logits, labels, p1);
  Tensor cases({int(cost_cases_floats(N))}, Device::cpu());
  softmax_cost_forward(logits, labels, p2, cases);
  const CostStats halves = cost_stats(cases, labels, K);
  EXPECT_EQ(halves.cost_sum, whole.cost_sum);
  EXPECT_EQ(halves.top1_errors, whole.top1_errors);
  EXPECT_EQ(halves.top5_errors, whole.top5_errors);
  EXPECT_GT(whole.cost_sum, 0);
  EXPECT_EQ(p1.to_vector(), p2.to_vector());

  Tensor short_buffer({int(cost_cases_floats(N)) - 1}, Device::cpu());
  EXPECT_THROW(softmax_cost_forward(logits, labels, p2, short_buffer), ValueError);
  EXPECT_THROW(cost_stats(short_buffer, labels, K), ValueError);
}

// A case the device flagged as having no class index for a label is reported by name.
TEST(SoftmaxCostOp, CostStatsReportsAFlaggedLabel) {
  const int K = 3, N = 4;
  Tensor labels({N}, Device::cpu());
  const std::vector<float> y = {0, 2, 5, 1};
  labels.copy_from_host(y.data());
  Tensor cases({int(cost_cases_floats(N))}, Device::cpu());
  std::vector<float> raw(size_t(cost_cases_floats(N)), 0.f);
  int32_t flag = 4;  // what the CUDA kernel writes for case 2
  std::memcpy(raw.data() + 2 * N + 2, &flag, sizeof flag);
  cases.copy_from_host(raw.data());
  try {
    cost_stats(cases, labels, K);
    FAIL() << "no error for a flagged label";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("label 5 of case 2 is not a class index in [0, 3)"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace convnet

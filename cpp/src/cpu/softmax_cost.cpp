// CPU softmax with the multinomial logistic (cross-entropy) cost, and its gradient.
// Layout {K classes, N cases} row-major: element (k, n) at k * N + n, the batch innermost, so
// every loop below runs over k outside and a contiguous strip of cases inside (these vectorise,
// except the one calling std::exp).
#include <algorithm>
#include <cmath>

#include "cpu/cpu_ops.h"

namespace convnet::cpu {

namespace {
// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Cases per work item: narrow enough that a batch of 128 splits across threads, wide enough to
// fill a few vector registers per row.
constexpr int kStrip = 32;
}  // namespace

void softmax_cost_forward(const float* logits, const float* labels, float* probs, int classes,
                          int batch, double* case_cost, int32_t* case_flags) {
  const int K = classes, N = batch;
  const int topk = std::min(5, K);
  // Per-case results, summed in order afterwards so the totals do not depend on the threads.
  const int strips = (N + kStrip - 1) / kStrip;

#pragma omp parallel for schedule(static) if (int64_t(K) * N >= kParallelMin)
  for (int s = 0; s < strips; ++s) {
    const int n0 = s * kStrip, w = std::min(kStrip, N - n0);
    float mx[kStrip], lab_logit[kStrip], lab_prob[kStrip];
    double sum[kStrip];
    int lab[kStrip], above[kStrip];
    for (int j = 0; j < w; ++j) {
      lab[j] = int(labels[n0 + j]);
      // Read before probs is written: probs may be the logits buffer itself.
      lab_logit[j] = logits[int64_t(lab[j]) * N + n0 + j];
      mx[j] = logits[n0 + j];
      sum[j] = 0;
      above[j] = 0;
    }
    // Subtracting the column maximum keeps exp() from overflowing.
    for (int k = 1; k < K; ++k) {
      const float* row = logits + int64_t(k) * N + n0;
      for (int j = 0; j < w; ++j) mx[j] = row[j] > mx[j] ? row[j] : mx[j];
    }
    for (int k = 0; k < K; ++k) {
      const float* row = logits + int64_t(k) * N + n0;
      float* prow = probs + int64_t(k) * N + n0;
      for (int j = 0; j < w; ++j) {
        const float e = std::exp(row[j] - mx[j]);
        prow[j] = e;
        sum[j] += e;
      }
    }
    float inv[kStrip];
    for (int j = 0; j < w; ++j) inv[j] = float(1.0 / sum[j]);
    for (int k = 0; k < K; ++k) {
      float* prow = probs + int64_t(k) * N + n0;
      for (int j = 0; j < w; ++j) prow[j] *= inv[j];
    }
    for (int j = 0; j < w; ++j) {
      // -log p[label] from the logits (log-sum-exp), exact even where p underflows to 0.
      case_cost[n0 + j] = -(double(lab_logit[j]) - double(mx[j]) - std::log(sum[j]));
      lab_prob[j] = probs[int64_t(lab[j]) * N + n0 + j];
    }
    // The label is in the top k iff fewer than k classes are strictly more probable (ties count
    // in the label's favour).
    for (int k = 0; k < K; ++k) {
      const float* prow = probs + int64_t(k) * N + n0;
      for (int j = 0; j < w; ++j) above[j] += prow[j] > lab_prob[j] ? 1 : 0;
    }
    for (int j = 0; j < w; ++j)
      case_flags[n0 + j] = (above[j] >= 1 ? 1 : 0) | (above[j] >= topk ? 2 : 0);
  }
}

CostStats sum_cost_cases(const double* case_cost, const int32_t* case_flags, int batch) {
  CostStats st;
  for (int n = 0; n < batch; ++n) {
    st.cost_sum += case_cost[n];
    st.top1_errors += case_flags[n] & 1;
    st.top5_errors += (case_flags[n] >> 1) & 1;
  }
  return st;
}

void softmax_cost_backward(const float* probs, const float* labels, float scale, float* dlogits,
                           int classes, int batch, bool accumulate) {
  const int K = classes, N = batch;
#pragma omp parallel for schedule(static) if (int64_t(K) * N >= kParallelMin)
  for (int k = 0; k < K; ++k) {
    const float* prow = probs + int64_t(k) * N;
    float* drow = dlogits + int64_t(k) * N;
    // Labels hold exact integers, so comparing them as floats is exact (no per-element
    // float-to-int conversion). This K x N pass is tiny next to the forward's exp().
    const float fk = float(k);
    if (accumulate) {
      for (int n = 0; n < N; ++n) drow[n] += scale * (prow[n] - (labels[n] == fk ? 1.f : 0.f));
    } else {
      for (int n = 0; n < N; ++n) drow[n] = scale * (prow[n] - (labels[n] == fk ? 1.f : 0.f));
    }
  }
}

}  // namespace convnet::cpu

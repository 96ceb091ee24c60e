// CUDA softmax + multinomial logistic cost and its gradient. Reference: cpu/softmax_cost.cpp
// (same passes and comparisons: max, exp and double sum, normalise by float(1/sum), cost from
// the logits by log-sum-exp, label in top k iff fewer than k probabilities are strictly greater).
// Forward: a block per tile of 8 cases (threadIdx.x -> case: 8 floats = one 32-byte sector per
// class row) x up to 128 class lanes (threadIdx.y strides over K, so K ~ 22000 is fine); lanes are
// combined in shared memory in fixed order. Per-case cost/errors go to the caller's device
// buffer (no wait for the host, so a CUDA graph can capture it); ops.cpp's cost_stats brings them
// back and sums them in case order, as on the CPU: deterministic.
// Backward: one thread per (k, n), n fastest.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kTile = 8;       // cases per block
constexpr int kMaxLanes = 128;  // class lanes per block (blockDim.y)
constexpr int kThreads = 256;   // backward

// probs may be the logits buffer itself: every element is read before it is overwritten, by the
// thread that overwrites it, and the label's logit is read in pass 1 before any write.
// Up to kTile * kMaxLanes = 1024 threads per block: tell the compiler, so that it keeps the
// registers per thread within what such a block may use (64 on sm_90).
__global__ void __launch_bounds__(kTile * kMaxLanes) softmax_forward_kernel(const float* logits, const float* labels, float* probs,
                                       int K, int N, int topk, double* cost, int32_t* flags) {
  __shared__ float s_max[kMaxLanes][kTile];
  __shared__ double s_sum[kMaxLanes][kTile];
  __shared__ int s_above[kMaxLanes][kTile];
  __shared__ float s_inv[kTile], s_lab_prob[kTile];

  const int tx = threadIdx.x, ty = threadIdx.y, lanes = blockDim.y;
  const int64_t n = int64_t(blockIdx.x) * kTile + tx;
  const bool active = n < N;  // inactive threads still reach every __syncthreads
  const float* col = logits + n;
  float* pcol = probs + n;

  // Pass 1: the case's maximum logit (lane 0 starts at class 0, as the CPU does).
  int lab = 0;
  bool bad_label = false;
  float lab_logit = 0.0f;
  float mx = -INFINITY;
  if (active) {
    if (ty == 0) {
      // A label that is no class index is flagged for the host to report; class 0 stands in
      // for it so that nothing is read out of bounds.
      const float l = labels[n];
      bad_label = !(l >= 0.0f && l < float(K) && l == truncf(l));
      lab = bad_label ? 0 : int(l);
      lab_logit = col[int64_t(lab) * N];
    }
    if (ty < K) mx = col[int64_t(ty) * N];
    for (int k = ty + lanes; k < K; k += lanes) {
      const float v = col[int64_t(k) * N];
      mx = v > mx ? v : mx;
    }
  }
  s_max[ty][tx] = mx;
  __syncthreads();
  if (ty == 0) {
    for (int l = 1; l < lanes; ++l) {
      const float v = s_max[l][tx];
      mx = v > mx ? v : mx;
    }
    s_max[0][tx] = mx;
  }
  __syncthreads();
  mx = s_max[0][tx];

  // Pass 2: probs = exp(logit - max), summed in double.
  double sum = 0.0;
  if (active) {
    for (int k = ty; k < K; k += lanes) {
      const float e = expf(col[int64_t(k) * N] - mx);
      pcol[int64_t(k) * N] = e;
      sum += e;
    }
  }
  s_sum[ty][tx] = sum;
  __syncthreads();  // also makes the exp values written above visible to the whole block
  if (ty == 0) {
    for (int l = 1; l < lanes; ++l) sum += s_sum[l][tx];
    if (active) {
      const float inv = float(1.0 / sum);
      s_inv[tx] = inv;
      // The label's normalised probability, rounded exactly as pass 3 rounds it.
      s_lab_prob[tx] = pcol[int64_t(lab) * N] * inv;
    }
  }
  __syncthreads();

  // Pass 3: normalise, and count the classes strictly more probable than the label.
  int above = 0;
  if (active) {
    const float inv = s_inv[tx], lab_prob = s_lab_prob[tx];
    for (int k = ty; k < K; k += lanes) {
      const float p = pcol[int64_t(k) * N] * inv;
      pcol[int64_t(k) * N] = p;
      above += p > lab_prob ? 1 : 0;
    }
  }
  s_above[ty][tx] = above;
  __syncthreads();
  if (ty == 0 && active) {
    for (int l = 1; l < lanes; ++l) above += s_above[l][tx];
    // -log p[label] from the logits (log-sum-exp), exact even where p underflows to 0.
    cost[n] = -(double(lab_logit) - double(mx) - log(sum));
    flags[n] = (above >= 1 ? 1 : 0) | (above >= topk ? 2 : 0) | (bad_label ? 4 : 0);
  }
}

__global__ void softmax_backward_kernel(const float* probs, const float* labels, float scale,
                                        float* dlogits, int N, int64_t total, bool accumulate) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(idx % N);
    const float fk = float(idx / N);  // labels hold exact integers: compare as floats, like the CPU
    const float g = __fmul_rn(scale, probs[idx] - (labels[n] == fk ? 1.0f : 0.0f));
    // Overwrite mode never reads dlogits (it may hold garbage); dlogits may alias probs.
    dlogits[idx] = accumulate ? __fadd_rn(dlogits[idx], g) : g;
  }
}

}  // namespace

void softmax_cost_forward(const float* logits, const float* labels, float* probs, int classes,
                          int batch, double* case_cost, int32_t* case_flags) {
  const int K = classes, N = batch;
  if (K <= 0 || N <= 0) return;
  const int topk = std::min(5, K);

  int lanes = 1;
  while (lanes < K && lanes < kMaxLanes) lanes *= 2;
  const dim3 block(kTile, lanes);
  const dim3 grid(unsigned((N + kTile - 1) / kTile));
  softmax_forward_kernel<<<grid, block, 0, current_stream()>>>(logits, labels, probs, K, N, topk,
                                                              case_cost, case_flags);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void softmax_cost_backward(const float* probs, const float* labels, float scale, float* dlogits,
                           int classes, int batch, bool accumulate) {
  const int64_t total = int64_t(classes) * batch;
  if (total <= 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>((total + kThreads - 1) / kThreads, 0x7fffffff));
  softmax_backward_kernel<<<blocks, kThreads, 0, current_stream()>>>(probs, labels, scale, dlogits,
                                                                    batch, total, accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

// CUDA solver updates. Reference: cpu/sgd.cpp (formulas in convnet/ops.h):
//   SGD: v <- momentum * v - weight_decay * lr * w - lr * grad;   w <- w + v
//   Nesterov: s <- weight_decay * lr * w + lr * grad;  v <- momentum * v - s;  w <- w + momentum * v - s
//   AdamW: m, v <- their moving averages; w <- w * keep - step_size * m / (sqrt(v) * inv_bc2 + eps)
// Design: one pass, grid-stride; SGD's thread updates 4 consecutive elements through float4 when
// all three arrays are 16-byte aligned (the first threads finish the last n % 4), else one
// element. Nesterov and AdamW run one element per thread: they are memory-bound and called once
// per parameter per step.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the loops stride beyond this

unsigned blocks_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

__device__ __forceinline__ void sgd_step(float& w, float g, float& v, float lr, float momentum,
                                         float decay) {
  const float vi = momentum * v - decay * w - lr * g;
  v = vi;
  w += vi;
}

__global__ void sgd_kernel(float* w, const float* grad, float* v, int64_t n, float lr,
                           float momentum, float decay) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float wi = w[i], vi = v[i];
    sgd_step(wi, grad[i], vi, lr, momentum, decay);
    v[i] = vi;
    w[i] = wi;
  }
}

// n4 = n / 4 float4 groups, then the tail n4*4 .. n-1 by the first threads of the grid.
__global__ void sgd_kernel4(float* w, const float* grad, float* v, int64_t n, float lr,
                            float momentum, float decay) {
  const int64_t n4 = n >> 2;
  float4* w4 = reinterpret_cast<float4*>(w);
  float4* v4 = reinterpret_cast<float4*>(v);
  const float4* g4 = reinterpret_cast<const float4*>(grad);
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    float4 wi = w4[i], vi = v4[i];
    const float4 gi = g4[i];
    sgd_step(wi.x, gi.x, vi.x, lr, momentum, decay);
    sgd_step(wi.y, gi.y, vi.y, lr, momentum, decay);
    sgd_step(wi.z, gi.z, vi.z, lr, momentum, decay);
    sgd_step(wi.w, gi.w, vi.w, lr, momentum, decay);
    v4[i] = vi;
    w4[i] = wi;
  }
  const int64_t t = n4 * 4 + first;
  if (t < n) {
    float wi = w[t], vi = v[t];
    sgd_step(wi, grad[t], vi, lr, momentum, decay);
    v[t] = vi;
    w[t] = wi;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

__global__ void nesterov_kernel(float* w, const float* grad, float* v, int64_t n, float lr,
                                float momentum, float decay) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float s = decay * w[i] + lr * grad[i];
    const float vi = momentum * v[i] - s;
    v[i] = vi;
    w[i] += momentum * vi - s;
  }
}

__global__ void adamw_kernel(float* w, const float* grad, float* m, float* v, int64_t n,
                             float keep, float step_size, float inv_bc2, float beta1, float c1,
                             float beta2, float c2, float eps) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + c1 * g;
    const float vi = beta2 * v[i] + c2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * keep - step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
  }
}

}  // namespace

void nesterov_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                     float weight_decay) {
  if (n <= 0) return;
  const float decay = weight_decay * lr;  // as the CPU rounds it
  nesterov_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(w, grad, v, n, lr, momentum,
                                                                    decay);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void adamw_update(float* w, const float* grad, float* m, float* v, int64_t n, float keep,
                  float step_size, float inv_bc2, float beta1, float c1, float beta2, float c2,
                  float eps) {
  if (n <= 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(w, grad, m, v, n, keep,
                                                                 step_size, inv_bc2, beta1, c1,
                                                                 beta2, c2, eps);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void sgd_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                float weight_decay) {
  if (n <= 0) return;
  const float decay = weight_decay * lr;  // as the CPU rounds it
  if (aligned16(w) && aligned16(grad) && aligned16(v)) {
    // at least one thread per tail element (n % 4 <= 3 < kThreads)
    const unsigned blocks = blocks_for(std::max<int64_t>(n >> 2, 1));
    sgd_kernel4<<<blocks, kThreads, 0, current_stream()>>>(w, grad, v, n, lr, momentum, decay);
  } else {
    sgd_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(w, grad, v, n, lr, momentum,
                                                                 decay);
  }
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

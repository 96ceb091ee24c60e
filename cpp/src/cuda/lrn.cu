// CUDA cross-map LRN. Reference: cpu/lrn.cpp (same formula, same window, same summation order;
// results agree to a few ulp: d^-beta is computed differently, and the CPU compiler may contract
// multiply-adds into FMAs where this file rounds each operation).
// Design: activations {C, inner}; a thread owns one position j of inner (consecutive threads ->
// consecutive j -> coalesced rows) and walks a chunk of channels (blockIdx.y), recomputing each
// window sum directly like the CPU (no running-sum drift); the window's other rows hit L1.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/lrn_math.cuh"

namespace convnet::cuda {
namespace {

// denom[c][j] = k + alpha * sum_{i in [c-before, c+after] clipped to [0, C)} x[i][j]^2; y = x * denom^-beta.
// The explicit _rn intrinsics stop nvcc contracting into FMAs: each product and sum rounds once.
__global__ void lrn_forward_kernel(const float* x, float* y, float* denom, int channels,
                                   int64_t inner, int chunk, int before, int after, float k,
                                   float alpha, float beta, int kind) {
  const int c0 = blockIdx.y * chunk;
  const int c1 = min(channels, c0 + chunk);
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    for (int c = c0; c < c1; ++c) {
      const int lo = max(0, c - before), hi = min(channels - 1, c + after);
      float s = 0.0f;
      for (int i = lo; i <= hi; ++i) {
        const float v = x[int64_t(i) * inner + j];
        s = __fadd_rn(s, __fmul_rn(v, v));
      }
      const float d = __fadd_rn(k, __fmul_rn(alpha, s));
      const int64_t off = int64_t(c) * inner + j;
      denom[off] = d;
      y[off] = x[off] * neg_pow(d, beta, kind);
    }
  }
}

// dx_c = dy_c d_c^-beta - coeff x_c sum_{i in [c-after, c+before] clipped to [0, C)} dy_i y_i / d_i
// (c in window(i) <=> i in [c-after, c+before]; asymmetric for even sizes). Same rounding
// order as the CPU: t_i = (dy_i * y_i) / d_i summed by ascending i, then the two products.
__global__ void lrn_backward_kernel(const float* x, const float* y, const float* denom,
                                    const float* dy, float* dx, int channels, int64_t inner,
                                    int chunk, int before, int after, float beta, int kind,
                                    float coeff, bool accumulate) {
  const int c0 = blockIdx.y * chunk;
  const int c1 = min(channels, c0 + chunk);
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    for (int c = c0; c < c1; ++c) {
      const int lo = max(0, c - after), hi = min(channels - 1, c + before);
      float acc = 0.0f;
      for (int i = lo; i <= hi; ++i) {
        const int64_t oi = int64_t(i) * inner + j;
        acc = __fadd_rn(acc, __fdiv_rn(__fmul_rn(dy[oi], y[oi]), denom[oi]));
      }
      const int64_t off = int64_t(c) * inner + j;
      const float s = neg_pow(denom[off], beta, kind);
      const float g = __fsub_rn(__fmul_rn(dy[off], s), __fmul_rn(__fmul_rn(coeff, x[off]), acc));
      // Overwrite mode never reads dx (it may hold garbage).
      dx[off] = accumulate ? __fadd_rn(dx[off], g) : g;
    }
  }
}

}  // namespace

void lrn_forward(const float* x, float* y, float* denom, int channels, int64_t inner,
                 const LrnParams& p) {
  if (channels <= 0 || inner <= 0) return;
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;  // window(c) = [c-before, c+after]
  const Launch l = launch_shape(channels, inner);
  lrn_forward_kernel<<<l.grid, l.block, 0, current_stream()>>>(
      x, y, denom, channels, inner, l.chunk, before, after, p.k, p.alpha, p.beta,
      pow_kind(p.beta));
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void lrn_backward(const float* x, const float* y, const float* denom, const float* dy, float* dx,
                  int channels, int64_t inner, const LrnParams& p, bool accumulate) {
  if (channels <= 0 || inner <= 0) return;
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;
  const float coeff = 2.0f * p.alpha * p.beta;
  const Launch l = launch_shape(channels, inner);
  lrn_backward_kernel<<<l.grid, l.block, 0, current_stream()>>>(
      x, y, denom, dy, dx, channels, inner, l.chunk, before, after, p.beta, pow_kind(p.beta),
      coeff, accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

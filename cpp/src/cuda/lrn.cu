// CUDA response normalisation: cross-map LRN, and same-map rnorm (at the end). Reference:
// cpu/lrn.cpp (same formula, same window, same summation order;
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

// ---- same-map response normalisation (rnorm) ----
// A thread per element (c, y, x, n); consecutive threads take consecutive n, so every read of the
// window is coalesced. The window is summed in cpu/lrn.cpp's order: each window row over x'
// (ascending) into its own sum, the row sums over y' (ascending); the backward pass recomputes
// t_i = dy_i y_i / d_i where the CPU reads it from a buffer (the same rounded value).

namespace {

__global__ void rnorm_forward_kernel(const float* x, float* y, float* denom, int64_t total,
                                     int height, int width, int batch, int before, int after,
                                     float k, float alpha, float beta, int kind) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(e % batch);
    const int64_t pix = e / batch;
    const int px = int(pix % width), py = int((pix / width) % height);
    const int64_t plane = pix / (int64_t(width) * height) * height * width;  // c * H * W
    const int y0 = max(0, py - before), y1 = min(height - 1, py + after);
    const int x0 = max(0, px - before), x1 = min(width - 1, px + after);
    float s = 0.0f;
    for (int j = y0; j <= y1; ++j) {
      float r = 0.0f;
      for (int i = x0; i <= x1; ++i) {
        const float v = x[((plane + int64_t(j) * width + i) * batch) + n];
        r = __fadd_rn(r, __fmul_rn(v, v));
      }
      s = __fadd_rn(s, r);
    }
    const float d = __fadd_rn(k, __fmul_rn(alpha, s));
    denom[e] = d;
    y[e] = x[e] * neg_pow(d, beta, kind);
  }
}

// dx_j = dy_j d_j^-beta - coeff x_j sum_{i in [j-after, j+before]^2, clipped} dy_i y_i / d_i.
__global__ void rnorm_backward_kernel(const float* x, const float* y, const float* denom,
                                      const float* dy, float* dx, int64_t total, int height,
                                      int width, int batch, int before, int after, float beta,
                                      int kind, float coeff, bool accumulate) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int n = int(e % batch);
    const int64_t pix = e / batch;
    const int px = int(pix % width), py = int((pix / width) % height);
    const int64_t plane = pix / (int64_t(width) * height) * height * width;
    const int y0 = max(0, py - after), y1 = min(height - 1, py + before);
    const int x0 = max(0, px - after), x1 = min(width - 1, px + before);
    float acc = 0.0f;
    for (int j = y0; j <= y1; ++j) {
      float r = 0.0f;
      for (int i = x0; i <= x1; ++i) {
        const int64_t o = (plane + int64_t(j) * width + i) * batch + n;
        r = __fadd_rn(r, __fdiv_rn(__fmul_rn(dy[o], y[o]), denom[o]));
      }
      acc = __fadd_rn(acc, r);
    }
    const float s = neg_pow(denom[e], beta, kind);
    const float g = __fsub_rn(__fmul_rn(dy[e], s), __fmul_rn(__fmul_rn(coeff, x[e]), acc));
    dx[e] = accumulate ? __fadd_rn(dx[e], g) : g;  // overwrite mode never reads dx
  }
}

// Enough blocks to cover `total` threads (grid-stride beyond 2^31 - 1 blocks).
dim3 flat_grid(int64_t total) {
  return dim3(unsigned(std::min<int64_t>((total + kThreads - 1) / kThreads, 0x7fffffff)));
}

}  // namespace

void rnorm_forward(const float* x, float* y, float* denom, int channels, int height, int width,
                   int batch, const RnormParams& p) {
  const int64_t total = int64_t(channels) * height * width * batch;
  if (total <= 0) return;
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;
  const dim3 grid = flat_grid(total);
  rnorm_forward_kernel<<<grid, kThreads, 0, current_stream()>>>(
      x, y, denom, total, height, width, batch, before, after, p.k, p.alpha, p.beta,
      pow_kind(p.beta));
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void rnorm_backward(const float* x, const float* y, const float* denom, const float* dy,
                    float* dx, int channels, int height, int width, int batch,
                    const RnormParams& p, bool accumulate) {
  const int64_t total = int64_t(channels) * height * width * batch;
  if (total <= 0) return;
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;
  const dim3 grid = flat_grid(total);
  rnorm_backward_kernel<<<grid, kThreads, 0, current_stream()>>>(
      x, y, denom, dy, dx, total, height, width, batch, before, after, p.beta, pow_kind(p.beta),
      2.0f * p.alpha * p.beta, accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

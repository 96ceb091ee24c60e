// CUDA max/average pooling over CHWN activations. Reference: cpu/pool.cpp (same padded and
// clipped windows, same comparisons and summation order: max pooling matches it exactly; averages may
// differ in the last bit where the CPU compiler contracts a multiply-add into an FMA).
// Forward: one thread per output (c, oy, ox, n), n fastest, scanning its window. Backward is a
// gather (deterministic, no atomics): one thread per input (c, iy, ix, n) adds, in ascending
// (oy, ox) order like the CPU's scatter, the gradient of every output window that contains it:
// dy/count for average, dy where it is that window's first maximum (argmax recomputed from x).
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/pool_gather.cuh"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 0x7fffffff));
}

template <bool kMax>
__global__ void pool_forward_kernel(const float* x, float* y, Geo g, int64_t total) {
  const int64_t N = g.batch, W = g.width;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx % N;
    int64_t t = idx / N;
    const int ox = int(t % g.out_w);
    t /= g.out_w;
    const int oy = int(t % g.out_h);
    const int64_t c = t / g.out_h;
    // Window [y0, y1) x [x0, x1), clipped to the input.
    int y0, y1, ph, x0, x1, pw;
    window(oy, g, g.height, y0, y1, ph);
    window(ox, g, g.width, x0, x1, pw);
    const float* xc = x + c * g.height * W * N + n;
    float r;
    if (kMax) {
      r = xc[(int64_t(y0) * W + x0) * N];
      for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) {
          const float v = xc[(int64_t(iy) * W + ix) * N];
          r = v > r ? v : r;
        }
    } else {
      r = 0.0f;
      for (int iy = y0; iy < y1; ++iy)
        for (int ix = x0; ix < x1; ++ix) r += xc[(int64_t(iy) * W + ix) * N];
      // Divide by the clipped window's element count, not size*size.
      r *= 1.0f / window_count(g, y0, y1, ph, x0, x1, pw);
    }
    y[idx] = r;
  }
}

template <bool kMax>
__global__ void pool_backward_kernel(const float* x, const float* dy, float* dx, Geo g,
                                     int64_t total, bool accumulate) {
  const int64_t N = g.batch, W = g.width;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx % N;
    int64_t t = idx / N;
    const int ix = int(t % W);
    t /= W;
    const int iy = int(t % g.height);
    const int64_t c = t / g.height;
    // Overwrite mode never reads dx (it may hold garbage).
    const float acc = accumulate ? dx[idx] : 0.0f;
    dx[idx] = pool_gradient_at<kMax>(acc, x, dy, g, c, iy, ix, n);
  }
}

}  // namespace

void pool_forward(const float* x, float* y, const PoolGeometry& g) {
  const int64_t total = int64_t(g.channels) * g.out_h * g.out_w * g.batch;
  if (total <= 0) return;
  const Geo geo = geo_of(g);
  if (g.type == PoolType::Max)
    pool_forward_kernel<true><<<blocks_for(total), kThreads, 0, current_stream()>>>(x, y, geo,
                                                                                    total);
  else
    pool_forward_kernel<false><<<blocks_for(total), kThreads, 0, current_stream()>>>(x, y, geo,
                                                                                     total);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void pool_backward(const float* x, const float* y, const float* dy, float* dx,
                   const PoolGeometry& g, bool accumulate) {
  (void)y;  // the max is recomputed from x, as on the CPU
  const int64_t total = int64_t(g.channels) * g.height * g.width * g.batch;
  if (total <= 0) return;
  const Geo geo = geo_of(g);
  if (g.type == PoolType::Max)
    pool_backward_kernel<true><<<blocks_for(total), kThreads, 0, current_stream()>>>(
        x, dy, dx, geo, total, accumulate);
  else
    pool_backward_kernel<false><<<blocks_for(total), kThreads, 0, current_stream()>>>(
        x, dy, dx, geo, total, accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

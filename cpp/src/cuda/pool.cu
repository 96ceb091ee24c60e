// CUDA max/average pooling over CHWN activations. Reference: cpu/pool.cpp (same clipped
// windows, same comparisons and summation order: max pooling matches it exactly; averages may
// differ in the last bit where the CPU compiler contracts a multiply-add into an FMA).
// Forward: one thread per output (c, oy, ox, n), n fastest, scanning its window. Backward is a
// gather (deterministic, no atomics): one thread per input (c, iy, ix, n) adds, in ascending
// (oy, ox) order like the CPU's scatter, the gradient of every output window that contains it:
// dy/count for average, dy where it is that window's first maximum (argmax recomputed from x).
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 0x7fffffff));
}

// Geometry passed by value to the kernels (PoolGeometry's fields, as plain ints).
struct Geo {
  int channels, height, width, batch, size, stride, out_h, out_w;
};

Geo geo_of(const PoolGeometry& g) {
  return {g.channels, g.height, g.width, g.batch, g.size, g.stride, g.out_h, g.out_w};
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
    const int y0 = oy * g.stride, y1 = min(y0 + g.size, g.height);
    const int x0 = ox * g.stride, x1 = min(x0 + g.size, g.width);
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
      r *= 1.0f / float((y1 - y0) * (x1 - x0));
    }
    y[idx] = r;
  }
}

// Outputs o whose window [o*stride, o*stride + size) contains input i: o*stride <= i and
// o*stride + size > i, i.e. o in [floor((i - size) / stride) + 1, floor(i / stride)], clipped to
// [0, out). (Clipping a window at the input's edge never removes an input i < in from it.)
__device__ __forceinline__ void covering(int i, int size, int stride, int out, int& lo, int& hi) {
  lo = i < size ? 0 : (i - size) / stride + 1;
  hi = min(i / stride, out - 1);
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
    int oy_lo, oy_hi, ox_lo, ox_hi;
    covering(iy, g.size, g.stride, g.out_h, oy_lo, oy_hi);
    covering(ix, g.size, g.stride, g.out_w, ox_lo, ox_hi);
    const float* xc = x + c * g.height * W * N + n;  // this case's plane of channel c
    const float* dyc = dy + c * g.out_h * int64_t(g.out_w) * N + n;
    const int64_t me = int64_t(iy) * W + ix;  // position within the plane
    // Overwrite mode never reads dx (it may hold garbage).
    float acc = accumulate ? dx[idx] : 0.0f;
    for (int oy = oy_lo; oy <= oy_hi; ++oy) {
      const int y0 = oy * g.stride, y1 = min(y0 + g.size, g.height);
      for (int ox = ox_lo; ox <= ox_hi; ++ox) {
        const int x0 = ox * g.stride, x1 = min(x0 + g.size, g.width);
        const float grad = dyc[(int64_t(oy) * g.out_w + ox) * N];
        if (kMax) {
          // The CPU's scan: start at the window's first element, move only on strictly greater.
          int64_t arg = int64_t(y0) * W + x0;
          float best = xc[arg * N];
          for (int wy = y0; wy < y1; ++wy)
            for (int wx = x0; wx < x1; ++wx) {
              const int64_t pos = int64_t(wy) * W + wx;
              const float v = xc[pos * N];
              if (v > best) {
                best = v;
                arg = pos;
              }
            }
          if (arg == me) acc += grad;
        } else {
          const float inv = 1.0f / float((y1 - y0) * (x1 - x0));
          acc += __fmul_rn(grad, inv);  // no FMA contraction: the product rounds, then the sum
        }
      }
    }
    dx[idx] = acc;
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

// What the pooling kernels share (pool.cu, lrn_pool.cu): the geometry as plain ints, and the
// backward gather of one input element. Reference: cpu/pool.cpp.
#pragma once
#include <cstdint>

#include "convnet/ops.h"

namespace convnet::cuda {
namespace {

// Geometry passed by value to the kernels (PoolGeometry's fields, as plain ints).
struct Geo {
  int channels, height, width, batch, size, stride, out_h, out_w, padding, count_padding;
};

Geo geo_of(const PoolGeometry& g) {
  return {g.channels, g.height, g.width, g.batch, g.size,     g.stride,
          g.out_h,    g.out_w,  g.padding, g.count_padding ? 1 : 0};
}

// Input rows (or columns) [lo, hi) of output position o, clipped to the input, and the window's
// extent in the padded input (what average pooling counts with count_padding): cpu/pool.cpp's.
__device__ __forceinline__ void window(int o, const Geo& g, int in, int& lo, int& hi, int& padded) {
  const int start = o * g.stride - g.padding, end = min(start + g.size, in + g.padding);
  padded = end - start;
  lo = max(start, 0);
  hi = min(end, in);
}

__device__ __forceinline__ float window_count(const Geo& g, int y0, int y1, int ph, int x0, int x1, int pw) {
  return g.count_padding ? float(ph * pw) : float((y1 - y0) * (x1 - x0));
}

// Outputs o whose window [o*stride - padding, o*stride - padding + size) contains input i: with
// j = i + padding, o*stride <= j < o*stride + size, i.e. o in [floor((j - size) / stride) + 1,
// floor(j / stride)], clipped to [0, out). (Clipping a window at the padded edge never removes
// an input i < in from it.)
__device__ __forceinline__ void covering(int i, const Geo& g, int out, int& lo, int& hi) {
  const int j = i + g.padding;
  lo = j < g.size ? 0 : (j - g.size) / g.stride + 1;
  hi = min(j / g.stride, out - 1);
}

// acc plus the gradient that input (c, iy, ix, n) of the pooling receives from every output
// window containing it, added in ascending (oy, ox) order like the CPU's scatter: dy/count for
// average, dy where it is that window's first maximum (argmax recomputed from x).
template <bool kMax>
__device__ __forceinline__ float pool_gradient_at(float acc, const float* x, const float* dy,
                                                  const Geo& g, int64_t c, int iy, int ix,
                                                  int64_t n) {
  const int64_t N = g.batch, W = g.width;
  int oy_lo, oy_hi, ox_lo, ox_hi;
  covering(iy, g, g.out_h, oy_lo, oy_hi);
  covering(ix, g, g.out_w, ox_lo, ox_hi);
  const float* xc = x + c * g.height * W * N + n;  // this case's plane of channel c
  const float* dyc = dy + c * g.out_h * int64_t(g.out_w) * N + n;
  const int64_t me = int64_t(iy) * W + ix;  // position within the plane
  for (int oy = oy_lo; oy <= oy_hi; ++oy) {
    int y0, y1, ph;
    window(oy, g, g.height, y0, y1, ph);
    for (int ox = ox_lo; ox <= ox_hi; ++ox) {
      int x0, x1, pw;
      window(ox, g, g.width, x0, x1, pw);
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
        const float inv = 1.0f / window_count(g, y0, y1, ph, x0, x1, pw);
        acc += __fmul_rn(grad, inv);  // no FMA contraction: the product rounds, then the sum
      }
    }
  }
  return acc;
}

}  // namespace
}  // namespace convnet::cuda

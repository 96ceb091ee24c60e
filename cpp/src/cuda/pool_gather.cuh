// What the pooling kernels share (pool.cu, lrn_pool.cu): the geometry as plain ints, and the
// backward gather of one input element. Reference: cpu/pool.cpp.
#pragma once
#include <cstdint>

#include "convnet/ops.h"

namespace convnet::cuda {
namespace {

// Geometry passed by value to the kernels (PoolGeometry's fields, as plain ints).
struct Geo {
  int channels, height, width, batch, size, stride, out_h, out_w;
};

Geo geo_of(const PoolGeometry& g) {
  return {g.channels, g.height, g.width, g.batch, g.size, g.stride, g.out_h, g.out_w};
}

// Outputs o whose window [o*stride, o*stride + size) contains input i: o*stride <= i and
// o*stride + size > i, i.e. o in [floor((i - size) / stride) + 1, floor(i / stride)], clipped to
// [0, out). (Clipping a window at the input's edge never removes an input i < in from it.)
__device__ __forceinline__ void covering(int i, int size, int stride, int out, int& lo, int& hi) {
  lo = i < size ? 0 : (i - size) / stride + 1;
  hi = min(i / stride, out - 1);
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
  covering(iy, g.size, g.stride, g.out_h, oy_lo, oy_hi);
  covering(ix, g.size, g.stride, g.out_w, ox_lo, ox_hi);
  const float* xc = x + c * g.height * W * N + n;  // this case's plane of channel c
  const float* dyc = dy + c * g.out_h * int64_t(g.out_w) * N + n;
  const int64_t me = int64_t(iy) * W + ix;  // position within the plane
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
  return acc;
}

}  // namespace
}  // namespace convnet::cuda

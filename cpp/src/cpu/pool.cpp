// CPU max and average pooling over CHWN activations x[c][y][x][n] (batch innermost). Any size,
// stride (overlapping windows when stride < size) and padding; PoolGeometry::finish has already
// chosen out_h/out_w for floor or ceil mode, and windows that run past the edge are clipped here.
// Every inner loop runs over the contiguous batch dimension n.
#include <algorithm>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {
namespace {

// Input rows (or columns) [lo, hi) of output position o, clipped to the input, and the
// window's extent in the padded input (what average pooling counts with count_padding).
inline void window(int o, const PoolGeometry& g, int in, int& lo, int& hi, int& padded) {
  const int start = o * g.stride - g.padding, end = std::min(start + g.size, in + g.padding);
  padded = end - start;
  lo = std::max(start, 0);
  hi = std::min(end, in);
}

// The divisor of average pooling over rows [y0, y1) and columns [x0, x1).
inline float window_count(const PoolGeometry& g, int y0, int y1, int padded_h, int x0, int x1, int padded_w) {
  return g.count_padding ? float(padded_h * padded_w) : float((y1 - y0) * (x1 - x0));
}

}  // namespace

CONVNET_CPU_CLONES
void pool_forward(const float* x, float* y, const PoolGeometry& g) {
  const int64_t N = g.batch, W = g.width;
  const int64_t in_plane = int64_t(g.height) * W * N, out_plane = int64_t(g.out_h) * g.out_w * N;
  const bool is_max = g.type == PoolType::Max;

#pragma omp parallel for collapse(2) schedule(static)
  for (int c = 0; c < g.channels; ++c) {
    for (int oy = 0; oy < g.out_h; ++oy) {
      const float* xc = x + c * in_plane;
      int y0, y1, ph;
      window(oy, g, g.height, y0, y1, ph);
      for (int ox = 0; ox < g.out_w; ++ox) {
        int x0, x1, pw;
        window(ox, g, g.width, x0, x1, pw);
        float* out = y + c * out_plane + (int64_t(oy) * g.out_w + ox) * N;
        if (is_max) {
          const float* first = xc + (y0 * W + x0) * N;
          std::copy(first, first + N, out);
          for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
              const float* in = xc + (iy * W + ix) * N;
              for (int64_t n = 0; n < N; ++n) out[n] = in[n] > out[n] ? in[n] : out[n];
            }
        } else {
          std::fill(out, out + N, 0.0f);
          for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
              const float* in = xc + (iy * W + ix) * N;
              for (int64_t n = 0; n < N; ++n) out[n] += in[n];
            }
          // Divide by the clipped window's element count, not size*size.
          const float inv = 1.0f / window_count(g, y0, y1, ph, x0, x1, pw);
          for (int64_t n = 0; n < N; ++n) out[n] *= inv;
        }
      }
    }
  }
}

// Gradients scatter into overlapping windows, so the work is split by channel: no two threads
// ever write the same dx element.
CONVNET_CPU_CLONES
void pool_backward(const float* x, const float* y, const float* dy, float* dx,
                   const PoolGeometry& g, bool accumulate) {
  (void)y;  // the max is recomputed from x: no indices are stored, and y is not needed
  const int64_t N = g.batch, W = g.width;
  const int64_t in_plane = int64_t(g.height) * W * N, out_plane = int64_t(g.out_h) * g.out_w * N;
  const bool is_max = g.type == PoolType::Max;

#pragma omp parallel
  {
    std::vector<float> best(N);
    std::vector<int64_t> arg(N);  // offset within the channel plane of each case's argmax
#pragma omp for schedule(static)
    for (int c = 0; c < g.channels; ++c) {
      const float* xc = x + c * in_plane;
      float* dxc = dx + c * in_plane;
      // Overwrite mode: clear first (dx may hold garbage), then every path below adds.
      if (!accumulate) std::fill(dxc, dxc + in_plane, 0.0f);
      for (int oy = 0; oy < g.out_h; ++oy) {
        int y0, y1, ph;
        window(oy, g, g.height, y0, y1, ph);
        for (int ox = 0; ox < g.out_w; ++ox) {
          int x0, x1, pw;
          window(ox, g, g.width, x0, x1, pw);
          const float* grad = dy + c * out_plane + (int64_t(oy) * g.out_w + ox) * N;
          if (is_max) {
            // First maximal input in row-major (ky, kx) order: start at the window's first
            // element and move only on a strictly greater value.
            const int64_t first = (y0 * W + x0) * N;
            for (int64_t n = 0; n < N; ++n) {
              best[n] = xc[first + n];
              arg[n] = first;
            }
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) {
                const int64_t off = (iy * W + ix) * N;
                for (int64_t n = 0; n < N; ++n) {
                  const float v = xc[off + n];
                  if (v > best[n]) {
                    best[n] = v;
                    arg[n] = off;
                  }
                }
              }
            for (int64_t n = 0; n < N; ++n) dxc[arg[n] + n] += grad[n];
          } else {
            const float inv = 1.0f / window_count(g, y0, y1, ph, x0, x1, pw);
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) {
                float* d = dxc + (iy * W + ix) * N;
                for (int64_t n = 0; n < N; ++n) d[n] += grad[n] * inv;
              }
          }
        }
      }
    }
  }
}

}  // namespace convnet::cpu

// CPU max and average pooling over CHWN activations x[c][y][x][n] (batch innermost). Any size,
// stride (overlapping windows when stride < size) and padding; PoolGeometry::finish has already
// chosen out_h/out_w for floor or ceil mode, and windows that run past the edge are clipped here.
// Every inner loop runs over the contiguous batch dimension n.
#include <algorithm>
#include <cstdint>
#include <cstring>
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

// Max pooling's backward at one output position for kLanes cases: the first maximal input of the
// window in row-major (ky, kx) order (the argmax moves only on a strictly greater value) takes
// the case's gradient. The argmax is kept as the window index per case, and the gradient goes in
// by a second pass over the window that selects, so nothing is scattered. Written with GCC's
// vector types (8 floats): each dispatched clone lowers them to its own instructions (two SSE
// halves in the baseline, one AVX register above); plain loops of 8 came out scalar, with
// branches. dx changes only at the argmax (a select: adding zero would turn -0 into +0).
constexpr int kLanes = 8;
typedef float Floats8 __attribute__((vector_size(32)));
typedef int32_t Ints8 __attribute__((vector_size(32)));

inline void max_backward_lanes(const float* xc, float* dxc, const float* grad, const int64_t* offsets,
                               int count) {
  // Loads and stores by memcpy (no alignment assumed; no helper taking or returning a vector,
  // whose ABI would differ between the clones).
  Floats8 best, in, g, d;
  std::memcpy(&best, xc + offsets[0], sizeof best);
  Ints8 arg = Ints8{} + 0;
  for (int w = 1; w < count; ++w) {
    std::memcpy(&in, xc + offsets[w], sizeof in);
    const Ints8 greater = in > best;
    best = greater ? in : best;
    arg = greater ? Ints8{} + w : arg;
  }
  std::memcpy(&g, grad, sizeof g);
  for (int w = 0; w < count; ++w) {
    std::memcpy(&d, dxc + offsets[w], sizeof d);
    d = arg == w ? d + g : d;
    std::memcpy(dxc + offsets[w], &d, sizeof d);
  }
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
    std::vector<int64_t> offsets(size_t(g.size) * g.size);  // of the window's inputs, row-major
    const int64_t lane_blocks_end = N / kLanes * kLanes;    // cases [0, end) go by max_backward_lanes
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
            int count = 0;
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) offsets[count++] = (iy * W + ix) * N;
            for (int64_t n0 = 0; n0 < lane_blocks_end; n0 += kLanes)
              max_backward_lanes(xc + n0, dxc + n0, grad + n0, offsets.data(), count);
            if (lane_blocks_end == N) continue;
            // The cases past the last whole block: the same rule, one case at a time.
            const int64_t first = (y0 * W + x0) * N;
            for (int64_t n = lane_blocks_end; n < N; ++n) {
              best[n] = xc[first + n];
              arg[n] = first;
            }
            for (int iy = y0; iy < y1; ++iy)
              for (int ix = x0; ix < x1; ++ix) {
                const int64_t off = (iy * W + ix) * N;
                for (int64_t n = lane_blocks_end; n < N; ++n) {
                  const float v = xc[off + n];
                  if (v > best[n]) {
                    best[n] = v;
                    arg[n] = off;
                  }
                }
              }
            for (int64_t n = lane_blocks_end; n < N; ++n) dxc[arg[n] + n] += grad[n];
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

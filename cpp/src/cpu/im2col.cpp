// im2col / col2im for whole CHWN batches. With the batch innermost every copy is a run of N
// contiguous floats, and the column matrix is laid out (c, ky, kx) x (oy, ox, n) so that
// W * cols is the convolution output in CHWN directly. With stride 1, consecutive output
// columns read consecutive input columns, so a whole output row is one contiguous run.
#include <algorithm>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {

namespace {

// The output columns ox whose input column ox*stride - pad + kx lies inside [0, width).
void valid_columns(const ConvGeometry& g, int kx, int* lo, int* hi) {
  // smallest ox with ox*s >= pad - kx, and one past the largest with ox*s <= width - 1 + pad - kx
  const int first = g.pad - kx, last = g.width - 1 + g.pad - kx;
  *lo = std::min(g.out_w, first <= 0 ? 0 : (first + g.stride - 1) / g.stride);
  *hi = std::max(*lo, last < 0 ? 0 : std::min(g.out_w, last / g.stride + 1));
}

}  // namespace

CONVNET_CPU_CLONES
void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols) {
  const int64_t n = g.batch, row_len = int64_t(oy1 - oy0) * g.out_w * n;
  const int k = g.size, rows = g.group_channels() * k * k;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const int c = r / (k * k), ky = (r / k) % k, kx = r % k;
    const float* xc = x + int64_t(c0 + c) * g.height * g.width * n;
    int lo, hi;
    valid_columns(g, kx, &lo, &hi);
    float* out = cols + int64_t(r) * row_len;
    for (int oy = oy0; oy < oy1; ++oy, out += g.out_w * n) {
      const int iy = oy * g.stride - g.pad + ky;
      if (iy < 0 || iy >= g.height) {
        std::memset(out, 0, sizeof(float) * g.out_w * n);
        continue;
      }
      std::memset(out, 0, sizeof(float) * lo * n);
      std::memset(out + hi * n, 0, sizeof(float) * (g.out_w - hi) * n);
      const float* xrow = xc + int64_t(iy) * g.width * n;
      if (g.stride == 1) {
        std::memcpy(out + lo * n, xrow + int64_t(lo - g.pad + kx) * n, sizeof(float) * (hi - lo) * n);
      } else {
        for (int ox = lo; ox < hi; ++ox) {  // runs of N floats: an inlined loop beats memcpy calls
          const float* src = xrow + int64_t(ox * g.stride - g.pad + kx) * n;
          float* dst = out + ox * n;
          for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
        }
      }
    }
  }
}

CONVNET_CPU_CLONES
void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx) {
  const int64_t n = g.batch, row_len = int64_t(oy1 - oy0) * g.out_w * n;
  const int k = g.size;
  // One thread per channel: rows of the same channel overlap in dx, different channels never do.
#pragma omp parallel for schedule(static)
  for (int c = 0; c < g.group_channels(); ++c) {
    float* dxc = dx + int64_t(c0 + c) * g.height * g.width * n;
    for (int ky = 0; ky < k; ++ky) {
      for (int kx = 0; kx < k; ++kx) {
        int lo, hi;
        valid_columns(g, kx, &lo, &hi);
        const float* in = cols + int64_t((c * k + ky) * k + kx) * row_len;
        for (int oy = oy0; oy < oy1; ++oy, in += g.out_w * n) {
          const int iy = oy * g.stride - g.pad + ky;
          if (iy < 0 || iy >= g.height) continue;
          float* dxrow = dxc + int64_t(iy) * g.width * n;
          if (g.stride == 1) {  // one contiguous run
            float* d = dxrow + int64_t(lo - g.pad + kx) * n;
            const float* s = in + int64_t(lo) * n;
            const int64_t len = int64_t(hi - lo) * n;
            for (int64_t i = 0; i < len; ++i) d[i] += s[i];
          } else {
            for (int ox = lo; ox < hi; ++ox) {
              float* d = dxrow + int64_t(ox * g.stride - g.pad + kx) * n;
              const float* s = in + int64_t(ox) * n;
              for (int64_t i = 0; i < n; ++i) d[i] += s[i];
            }
          }
        }
      }
    }
  }
}

}  // namespace convnet::cpu

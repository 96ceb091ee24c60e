// im2col / col2im for whole CHWN batches. With the batch innermost every copy is a run of N
// contiguous floats, and the column matrix is laid out (c, ky, kx) x (oy, ox, n) so that
// W * cols is the convolution output in CHWN directly.
#include <cstring>

#include "cpu/cpu_ops.h"

namespace convnet::cpu {

void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols) {
  const int64_t n = g.batch, row_len = int64_t(oy1 - oy0) * g.out_w * n;
  const int k = g.size, rows = g.group_channels() * k * k;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const int c = r / (k * k), ky = (r / k) % k, kx = r % k;
    const float* xc = x + int64_t(c0 + c) * g.height * g.width * n;
    float* out = cols + int64_t(r) * row_len;
    for (int oy = oy0; oy < oy1; ++oy) {
      const int iy = oy * g.stride - g.pad + ky;
      if (iy < 0 || iy >= g.height) {
        std::memset(out, 0, sizeof(float) * g.out_w * n);
        out += g.out_w * n;
        continue;
      }
      const float* xrow = xc + int64_t(iy) * g.width * n;
      for (int ox = 0; ox < g.out_w; ++ox, out += n) {
        const int ix = ox * g.stride - g.pad + kx;
        if (ix < 0 || ix >= g.width) std::memset(out, 0, sizeof(float) * n);
        else std::memcpy(out, xrow + int64_t(ix) * n, sizeof(float) * n);
      }
    }
  }
}

void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx) {
  const int64_t n = g.batch, row_len = int64_t(oy1 - oy0) * g.out_w * n;
  const int k = g.size;
  // One thread per channel: rows of the same channel overlap in dx, different channels never do.
#pragma omp parallel for schedule(static)
  for (int c = 0; c < g.group_channels(); ++c) {
    float* dxc = dx + int64_t(c0 + c) * g.height * g.width * n;
    for (int ky = 0; ky < k; ++ky) {
      for (int kx = 0; kx < k; ++kx) {
        const float* in = cols + int64_t((c * k + ky) * k + kx) * row_len;
        for (int oy = oy0; oy < oy1; ++oy) {
          const int iy = oy * g.stride - g.pad + ky;
          if (iy < 0 || iy >= g.height) {
            in += g.out_w * n;
            continue;
          }
          float* dxrow = dxc + int64_t(iy) * g.width * n;
          for (int ox = 0; ox < g.out_w; ++ox, in += n) {
            const int ix = ox * g.stride - g.pad + kx;
            if (ix < 0 || ix >= g.width) continue;
            float* d = dxrow + int64_t(ix) * n;
            for (int64_t i = 0; i < n; ++i) d[i] += in[i];
          }
        }
      }
    }
  }
}

}  // namespace convnet::cpu

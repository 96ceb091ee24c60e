// CPU response normalisation: across channels (LRN, below first) and within each channel over a
// spatial window (rnorm, at the end). LRN is the AlexNet paper's formula (its alpha):
//   d[i] = k + alpha * sum_{j in window(i)} a[j]^2,   b[i] = a[i] * d[i]^-beta,
// window(i) = [i - size/2, i - size/2 + size - 1] clipped to [0, C).
// Activations are {C, inner}, inner = H*W*N contiguous per channel. Both passes split the inner
// dimension into blocks run in parallel; within a block they walk the channels, and every inner
// loop is a unit-stride run over (y, x, n) that vectorises.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {
namespace {

// How d^-beta is evaluated: the common exponents avoid a pow per element.
enum class PowKind { ThreeQuarters, Half, One, General };

PowKind pow_kind(float beta) {
  if (beta == 0.75f) return PowKind::ThreeQuarters;  // AlexNet
  if (beta == 0.5f) return PowKind::Half;
  if (beta == 1.0f) return PowKind::One;
  return PowKind::General;
}

// 1/sqrt(v) for normal v > 0, within a few ulp: a bit-level first guess and three Newton steps
// (relative error 3.4e-2 -> 1.8e-3 -> 5e-6 -> below float rounding). It is plain float and integer arithmetic, so the
// loops below vectorise; std::sqrt does not under GCC's default -fmath-errno, and was ~2.5x
// slower for AlexNet's conv1 LRN.
inline float rsqrt(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = 0x5f375a86u - (bits >> 1);
  float r;
  std::memcpy(&r, &bits, sizeof r);
  const float half_v = 0.5f * v;
  r = r * (1.5f - half_v * r * r);
  r = r * (1.5f - half_v * r * r);
  r = r * (1.5f - half_v * r * r);
  return r;
}

// out[b] = d[b]^-beta for b in [0, n). out may alias d. One loop per kind so each vectorises.
CONVNET_CPU_CLONES
void neg_pow(const float* d, float* out, int64_t n, float beta, PowKind kind) {
  switch (kind) {
    case PowKind::ThreeQuarters:
      // d^-3/4 = r^3/2 = r * sqrt(r) = r * r * rsqrt(r), with r = d^-1/2 (no overflow of d^3/2).
      for (int64_t b = 0; b < n; ++b) {
        const float r = rsqrt(d[b]);
        out[b] = r * r * rsqrt(r);
      }
      break;
    case PowKind::Half:
      for (int64_t b = 0; b < n; ++b) out[b] = rsqrt(d[b]);
      break;
    case PowKind::One:
      for (int64_t b = 0; b < n; ++b) out[b] = 1.0f / d[b];
      break;
    case PowKind::General:
      for (int64_t b = 0; b < n; ++b) out[b] = std::pow(d[b], -beta);
      break;
  }
}

// Inner elements per block. The backward pass keeps C rows of the block in a scratch buffer, so
// the block shrinks as C grows to keep that buffer (~128 KiB) in the per-core cache.
int64_t block_len(int channels) {
  int64_t b = (int64_t(1) << 15) / std::max(channels, 1);
  b = std::clamp<int64_t>(b, 64, 1024);
  return b & ~int64_t(15);
}

}  // namespace

CONVNET_CPU_CLONES
void lrn_forward(const float* x, float* y, float* denom, int channels, int64_t inner,
                 const LrnParams& p) {
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;  // window(c) = [c-before, c+after]
  const int64_t block = 1024;  // the forward pass needs no scratch, so the block can be long
  const int64_t nblocks = (inner + block - 1) / block;
  const PowKind kind = pow_kind(p.beta);
  const float k = p.k, alpha = p.alpha;

#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t i0 = blk * block, n = std::min(block, inner - i0);
    for (int c = 0; c < channels; ++c) {
      // The window sum is recomputed directly (size FMAs from L1) rather than kept as a running
      // sum: it costs little next to the power, and avoids the add/subtract drift in float.
      const int lo = std::max(0, c - before), hi = std::min(channels - 1, c + after);
      float* d = denom + int64_t(c) * inner + i0;
      std::fill(d, d + n, 0.0f);
      for (int j = lo; j <= hi; ++j) {
        const float* xj = x + int64_t(j) * inner + i0;
        for (int64_t b = 0; b < n; ++b) d[b] += xj[b] * xj[b];
      }
      for (int64_t b = 0; b < n; ++b) d[b] = k + alpha * d[b];
      float* yc = y + int64_t(c) * inner + i0;
      const float* xc = x + int64_t(c) * inner + i0;
      neg_pow(d, yc, n, p.beta, kind);
      for (int64_t b = 0; b < n; ++b) yc[b] *= xc[b];
    }
  }
}

// dx_j = dy_j * d_j^-beta - 2 alpha beta a_j * sum_{i : j in window(i)} dy_i a_i d_i^(-beta-1),
// and a_i d_i^(-beta-1) = y_i / d_i, so the sum needs no power.
CONVNET_CPU_CLONES
void lrn_backward(const float* x, const float* y, const float* denom, const float* dy, float* dx,
                  int channels, int64_t inner, const LrnParams& p, bool accumulate) {
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;
  const int64_t block = block_len(channels);
  const int64_t nblocks = (inner + block - 1) / block;
  const PowKind kind = pow_kind(p.beta);
  const float coeff = 2.0f * p.alpha * p.beta;

#pragma omp parallel
  {
    // t[c][b] = dy * y / d for every channel of the block; acc and scale are per-row scratch.
    std::vector<float> t(size_t(channels) * block), acc(block), scale(block);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t i0 = blk * block, n = std::min(block, inner - i0);
      for (int c = 0; c < channels; ++c) {
        const int64_t off = int64_t(c) * inner + i0;
        const float *dyc = dy + off, *yc = y + off, *dc = denom + off;
        float* tc = t.data() + size_t(c) * block;
        for (int64_t b = 0; b < n; ++b) tc[b] = dyc[b] * yc[b] / dc[b];
      }
      for (int j = 0; j < channels; ++j) {
        // j in window(i)  <=>  i in [j - after, j + before]; for even sizes this is not symmetric.
        const int lo = std::max(0, j - after), hi = std::min(channels - 1, j + before);
        float* a = acc.data();
        std::fill(a, a + n, 0.0f);
        for (int i = lo; i <= hi; ++i) {
          const float* ti = t.data() + size_t(i) * block;
          for (int64_t b = 0; b < n; ++b) a[b] += ti[b];
        }
        const int64_t off = int64_t(j) * inner + i0;
        const float *xj = x + off, *dyj = dy + off, *dj = denom + off;
        float* dxj = dx + off;
        neg_pow(dj, scale.data(), n, p.beta, kind);
        const float* s = scale.data();
        if (accumulate) {
          for (int64_t b = 0; b < n; ++b) dxj[b] += dyj[b] * s[b] - coeff * xj[b] * a[b];
        } else {  // dx may hold garbage: write without reading it
          for (int64_t b = 0; b < n; ++b) dxj[b] = dyj[b] * s[b] - coeff * xj[b] * a[b];
        }
      }
    }
  }
}

// ---- same-map response normalisation (cuda-convnet2's rnorm) ----
// d = k + alpha * (sum over the size x size window of a^2), summed as rows of the window: each
// row's sum over x' (ascending), then those over y' (ascending), the order cuda/lrn.cu keeps. The
// window is separable, so both passes are 1-D box sums over whole rows (c, y) of W*N floats; the
// inner loops run over the batch, unit stride.

namespace {

// A row of W positions, N floats each: out[x] = sum_{x' in [x - lo_off, x + hi_off] clipped to
// [0, W)} f(in[x']) with f the square or the identity.
template <bool Square>
inline void box_row(const float* in, float* out, int width, int64_t n, int lo_off, int hi_off) {
  for (int x = 0; x < width; ++x) {
    const int lo = std::max(0, x - lo_off), hi = std::min(width - 1, x + hi_off);
    float* o = out + int64_t(x) * n;
    std::fill(o, o + n, 0.0f);
    for (int j = lo; j <= hi; ++j) {
      const float* v = in + int64_t(j) * n;
      if (Square)
        for (int64_t b = 0; b < n; ++b) o[b] += v[b] * v[b];
      else
        for (int64_t b = 0; b < n; ++b) o[b] += v[b];
    }
  }
}

}  // namespace

CONVNET_CPU_CLONES
void rnorm_forward(const float* x, float* y, float* denom, int channels, int height, int width,
                   int batch, const RnormParams& p) {
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;  // win(q) = [q-before, q+after]
  const int64_t row = int64_t(width) * batch, plane = row * height;
  const int64_t rows = int64_t(channels) * height;
  const PowKind kind = pow_kind(p.beta);
  const float k = p.k, alpha = p.alpha;
  // y holds the horizontal sums of squares until the last pass overwrites it.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) box_row<true>(x + r * row, y + r * row, width, batch, before, after);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / height, yy = r % height;
    const int lo = std::max<int>(0, int(yy) - before), hi = std::min<int>(height - 1, int(yy) + after);
    float* d = denom + r * row;
    std::fill(d, d + row, 0.0f);
    for (int j = lo; j <= hi; ++j) {
      const float* h = y + c * plane + int64_t(j) * row;
      for (int64_t b = 0; b < row; ++b) d[b] += h[b];
    }
    for (int64_t b = 0; b < row; ++b) d[b] = k + alpha * d[b];
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * row;
    const float* xr = x + r * row;
    neg_pow(denom + r * row, yr, row, p.beta, kind);
    for (int64_t b = 0; b < row; ++b) yr[b] *= xr[b];
  }
}

// dx_j = dy_j d_j^-beta - 2 alpha beta a_j * sum_{i : j in win(i)} dy_i y_i / d_i (as LRN, with
// a_i d_i^(-beta-1) = y_i / d_i). j in win(i) <=> i in [j - after, j + before] in each direction
// (not symmetric for even sizes). t_i = dy_i y_i / d_i goes to a buffer, its horizontal box sums
// to another, and the last pass takes their vertical sums.
CONVNET_CPU_CLONES
void rnorm_backward(const float* x, const float* y, const float* denom, const float* dy,
                    float* dx, int channels, int height, int width, int batch,
                    const RnormParams& p, bool accumulate) {
  const int before = p.size / 2, after = p.size - 1 - p.size / 2;
  const int64_t row = int64_t(width) * batch, plane = row * height;
  const int64_t rows = int64_t(channels) * height, n = rows * row;
  const PowKind kind = pow_kind(p.beta);
  const float coeff = 2.0f * p.alpha * p.beta;
  std::unique_ptr<float[]> t(new float[size_t(n)]), h(new float[size_t(n)]);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * row;
    for (int64_t b = 0; b < row; ++b) t[o + b] = dy[o + b] * y[o + b] / denom[o + b];
    box_row<false>(t.get() + o, h.get() + o, width, batch, after, before);
  }
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(row)), scale(static_cast<size_t>(row));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t c = r / height, yy = r % height, o = r * row;
      const int lo = std::max<int>(0, int(yy) - after), hi = std::min<int>(height - 1, int(yy) + before);
      float* a = acc.data();
      std::fill(a, a + row, 0.0f);
      for (int j = lo; j <= hi; ++j) {
        const float* hj = h.get() + c * plane + int64_t(j) * row;
        for (int64_t b = 0; b < row; ++b) a[b] += hj[b];
      }
      neg_pow(denom + o, scale.data(), row, p.beta, kind);
      const float *s = scale.data(), *xr = x + o, *dyr = dy + o;
      float* dxr = dx + o;
      if (accumulate) {
        for (int64_t b = 0; b < row; ++b) dxr[b] += dyr[b] * s[b] - coeff * xr[b] * a[b];
      } else {  // dx may hold garbage: write without reading it
        for (int64_t b = 0; b < row; ++b) dxr[b] = dyr[b] * s[b] - coeff * xr[b] * a[b];
      }
    }
  }
}

}  // namespace convnet::cpu

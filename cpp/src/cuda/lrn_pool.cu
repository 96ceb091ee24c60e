// CUDA backward through LRN then pooling, in one kernel. Reference: cpu/pool.cpp's backward into
// the gradient of the LRN output, then cpu/lrn.cpp's backward (ops.cpp composes them on the CPU).
// Design: lrn.cu's backward layout (a thread per position j = (iy, ix, n) of the LRN output,
// walking a chunk of channels), where each dy_i the LRN window needs is the pooling gradient of
// element (i, j), gathered on the spot as pool.cu's backward gathers it, once per channel: a ring
// of the window's last `size` values (dy_i and dy_i y_i / d_i) slides up with c. The gradient of
// the LRN output is never written: one activation-sized write and read fewer than the two kernels,
// the same arithmetic in the same order, so the same bits.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/lrn_math.cuh"
#include "cuda/pool_gather.cuh"

namespace convnet::cuda {
namespace {

// The ring holds one LRN window; larger windows (no published net has one) take the two kernels.
constexpr int kRing = 16;
// A chunk of channels starts by gathering the size - 1 channels below it that the previous chunk
// gathered too: chunks of at least 16 channels keep that repeat under a quarter for size 5 (the
// AlexNet shapes at batch 128 still launch 4e5 threads and more).
constexpr int kMinChunk = 16;

template <bool kMax>
__global__ void lrn_pool_backward_kernel(const float* x, const float* y, const float* denom,
                                         const float* dpooled, float* dx, Geo g, int64_t inner,
                                         int chunk, int before, int after, float beta, int kind,
                                         float coeff, bool accumulate) {
  const int channels = g.channels;
  const int c0 = blockIdx.y * chunk;
  const int c1 = min(channels, c0 + chunk);
  const int64_t N = g.batch;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = j % N;
    const int64_t t = j / N;
    const int ix = int(t % g.width);
    const int iy = int(t / g.width);
    float dy_ring[kRing], term_ring[kRing];  // channel i at slot i % kRing
    int next = max(0, c0 - after);           // the first channel not yet in the ring
    for (int c = c0; c < c1; ++c) {
      const int lo = max(0, c - after), hi = min(channels - 1, c + before);
      for (; next <= hi; ++next) {
        const int64_t oi = int64_t(next) * inner + j;
        const float dyi = pool_gradient_at<kMax>(0.0f, y, dpooled, g, next, iy, ix, n);
        dy_ring[next % kRing] = dyi;
        term_ring[next % kRing] = __fdiv_rn(__fmul_rn(dyi, y[oi]), denom[oi]);
      }
      // lrn.cu's backward: acc over the window by ascending i, then the two products.
      float acc = 0.0f;
      for (int i = lo; i <= hi; ++i) acc = __fadd_rn(acc, term_ring[i % kRing]);
      const int64_t off = int64_t(c) * inner + j;
      const float s = neg_pow(denom[off], beta, kind);
      const float gc = __fsub_rn(__fmul_rn(dy_ring[c % kRing], s),
                                 __fmul_rn(__fmul_rn(coeff, x[off]), acc));
      // Overwrite mode never reads dx (it may hold garbage).
      dx[off] = accumulate ? __fadd_rn(dx[off], gc) : gc;
    }
  }
}

}  // namespace

void lrn_pool_backward(const float* x, const float* y, const float* denom, const float* dpooled,
                       float* dx, const LrnParams& lp, const PoolGeometry& pg, bool accumulate) {
  const int channels = pg.channels;
  const int64_t inner = int64_t(pg.height) * pg.width * pg.batch;
  if (channels <= 0 || inner <= 0) return;
  if (std::min(lp.size, channels) > kRing) {  // the two kernels, through a temporary
    Scratch dy(size_t(channels) * size_t(inner) * sizeof(float));
    float* dyp = static_cast<float*>(dy.ptr);
    pool_backward(y, nullptr, dpooled, dyp, pg, false);
    lrn_backward(x, y, denom, dyp, dx, channels, inner, lp, accumulate);
    return;
  }
  const int before = lp.size / 2, after = lp.size - 1 - lp.size / 2;
  const float coeff = 2.0f * lp.alpha * lp.beta;  // as lrn.cu rounds it
  const Launch l = launch_shape(channels, inner, kMinChunk);
  const Geo geo = geo_of(pg);
  if (pg.type == PoolType::Max)
    lrn_pool_backward_kernel<true><<<l.grid, l.block, 0, current_stream()>>>(
        x, y, denom, dpooled, dx, geo, inner, l.chunk, before, after, lp.beta, pow_kind(lp.beta),
        coeff, accumulate);
  else
    lrn_pool_backward_kernel<false><<<l.grid, l.block, 0, current_stream()>>>(
        x, y, denom, dpooled, dx, geo, inner, l.chunk, before, after, lp.beta, pow_kind(lp.beta),
        coeff, accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

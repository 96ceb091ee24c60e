// CUDA im2col / col2im for whole CHWN batches. Reference: cpu/im2col.cpp (same column layout
// (c, ky, kx) x (oy - oy0, ox, n); col2im adds into dx in the CPU's order, so it matches bitwise).
// Design: im2col: a thread owns one (c, oy, ox, n) (x: j = ox*N + n, consecutive threads ->
// consecutive n; y: oy; z: c) and writes its k*k column entries, one coalesced row per (ky, kx).
// col2im is a gather, no atomics: a thread owns one dx element (z: c, y: iy, x: j = ix*N + n) and
// sums the column entries that im2col copied from it, ky then kx ascending, into a register.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65535;  // per grid dimension; the kernels stride beyond it

__host__ __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

struct ColArgs {
  int n;                    // batch
  int height, width;        // input image
  int size, stride, pad;    // filter
  int out_w;                // output columns
  int oy0, oy1;             // output rows of this chunk
  int c0, channels;         // first input channel, channels of the group
  int64_t row_len;          // (oy1 - oy0) * out_w * n: one row of cols
};

// im2col for one thread: j = ox * n + b of output row oy0 + oyl, channel c. Writes
// cols[(c, ky, kx), (oyl, ox, b)] for every (ky, kx), 0 where the input position is padding.
// U is the type of j (uint32_t when the run fits, uint64_t otherwise).
template <typename U>
__host__ __device__ __forceinline__ void im2col_thread(const float* __restrict__ x,
                                                       float* __restrict__ cols,
                                                       const ColArgs& a, int c, int oyl, U j) {
  const U run = U(a.out_w) * U(a.n);
  const U ox = j / U(a.n);
  const int64_t b = int64_t(j - ox * U(a.n));
  const int64_t n = a.n;
  const int iy0 = (a.oy0 + oyl) * a.stride - a.pad;  // input row of ky = 0
  const int ix0 = int(ox) * a.stride - a.pad;        // input column of kx = 0
  const int k = a.size;
  const float* xc = x + int64_t(a.c0 + c) * a.height * a.width * n + b;
  // row r = (c*k + ky)*k + kx, column (oyl, ox, b) = oyl*run + j; r advances by 1 per (ky, kx)
  float* out = cols + int64_t(c) * k * k * a.row_len + int64_t(oyl) * int64_t(run) + int64_t(j);
  for (int ky = 0; ky < k; ++ky) {
    const int iy = iy0 + ky;
    const bool row_in = iy >= 0 && iy < a.height;
    for (int kx = 0; kx < k; ++kx, out += a.row_len) {
      const int ix = ix0 + kx;
      float v = 0.f;
      if (row_in && ix >= 0 && ix < a.width) v = xc[(int64_t(iy) * a.width + ix) * n];
      *out = v;
    }
  }
}

// col2im for one thread: dx element (c0 + c, iy, ix, b), j = ix * n + b. The column entries
// copied from it are those of the (ky, kx) with oy = (iy + pad - ky) / stride integral and in
// [oy0, oy1), ox = (ix + pad - kx) / stride integral and in [0, out_w). Walking oy down and ox
// down walks ky up and kx up: the CPU's order of additions into dx.
template <typename U>
__host__ __device__ __forceinline__ void col2im_thread(const float* __restrict__ cols,
                                                       float* __restrict__ dx, const ColArgs& a,
                                                       int c, int iy, U j) {
  const U ixu = j / U(a.n);
  const int64_t b = int64_t(j - ixu * U(a.n));
  const int ix = int(ixu);
  const int64_t n = a.n;
  const int s = a.stride, k = a.size;
  const int t = iy + a.pad, u = ix + a.pad;  // both >= 0
  // oy * s in [t - k + 1, t]  (ky = t - oy*s in [0, k)), oy in [oy0, oy1)
  const int oy_hi = imin(a.oy1 - 1, t / s);
  const int oy_lo = imax(a.oy0, t - k + 1 <= 0 ? 0 : (t - k + s) / s);
  const int ox_hi = imin(a.out_w - 1, u / s);
  const int ox_lo = u - k + 1 <= 0 ? 0 : (u - k + s) / s;
  if (oy_lo > oy_hi || ox_lo > ox_hi) return;  // nothing lands here: dx untouched
  float* d = dx + ((int64_t(a.c0 + c) * a.height + iy) * a.width + ix) * n + b;
  const float* base = cols + int64_t(c) * k * k * a.row_len + b;
  float acc = *d;
  for (int oy = oy_hi; oy >= oy_lo; --oy) {
    const int ky = t - oy * s;
    const float* rowp = base + int64_t(ky) * k * a.row_len + int64_t(oy - a.oy0) * a.out_w * n;
    for (int ox = ox_hi; ox >= ox_lo; --ox) {
      const int kx = u - ox * s;
      acc += rowp[int64_t(kx) * a.row_len + int64_t(ox) * n];
    }
  }
  *d = acc;
}

// The kernels' loops, written for any (block, thread) so that a host emulation can run them.
template <typename U>
__host__ __device__ __forceinline__ void im2col_block(const float* __restrict__ x,
                                                      float* __restrict__ cols, const ColArgs& a,
                                                      uint3 bid, uint3 gdim, unsigned bdimx,
                                                      unsigned tid) {
  const U run = U(a.out_w) * U(a.n);
  const int rows = a.oy1 - a.oy0;
  for (int c = int(bid.z); c < a.channels; c += int(gdim.z))
    for (int oyl = int(bid.y); oyl < rows; oyl += int(gdim.y))
      for (U j = U(bid.x) * bdimx + tid; j < run; j += U(gdim.x) * bdimx)
        im2col_thread<U>(x, cols, a, c, oyl, j);
}

template <typename U>
__host__ __device__ __forceinline__ void col2im_block(const float* __restrict__ cols,
                                                      float* __restrict__ dx, const ColArgs& a,
                                                      int iy_lo, int iy_hi, uint3 bid,
                                                      uint3 gdim, unsigned bdimx, unsigned tid) {
  const U run = U(a.width) * U(a.n);
  for (int c = int(bid.z); c < a.channels; c += int(gdim.z))
    for (int iy = iy_lo + int(bid.y); iy <= iy_hi; iy += int(gdim.y))
      for (U j = U(bid.x) * bdimx + tid; j < run; j += U(gdim.x) * bdimx)
        col2im_thread<U>(cols, dx, a, c, iy, j);
}

template <typename U>
__global__ void __launch_bounds__(kThreads)
    im2col_kernel(const float* __restrict__ x, float* __restrict__ cols, ColArgs a) {
  im2col_block<U>(x, cols, a, blockIdx, gridDim, blockDim.x, threadIdx.x);
}

template <typename U>
__global__ void __launch_bounds__(kThreads)
    col2im_kernel(const float* __restrict__ cols, float* __restrict__ dx, ColArgs a, int iy_lo,
                  int iy_hi) {
  col2im_block<U>(cols, dx, a, iy_lo, iy_hi, blockIdx, gridDim, blockDim.x, threadIdx.x);
}

ColArgs col_args(const ConvGeometry& g, int c0, int oy0, int oy1) {
  ColArgs a;
  a.n = g.batch;
  a.height = g.height;
  a.width = g.width;
  a.size = g.size;
  a.stride = g.stride;
  a.pad = g.pad;
  a.out_w = g.out_w;
  a.oy0 = oy0;
  a.oy1 = oy1;
  a.c0 = c0;
  a.channels = g.group_channels();
  a.row_len = int64_t(oy1 - oy0) * g.out_w * g.batch;
  return a;
}

// x covers a run of `run` threads (whole warps, at most kThreads), y and z the given counts.
void launch_shape(int64_t run, int64_t ycount, int64_t zcount, dim3* grid, dim3* block) {
  const int64_t bx = run >= kThreads ? kThreads : (run + 31) / 32 * 32;
  *block = dim3(unsigned(bx));
  *grid = dim3(unsigned(std::min<int64_t>((run + bx - 1) / bx, kMaxGrid)),
               unsigned(std::min<int64_t>(ycount, kMaxGrid)),
               unsigned(std::min<int64_t>(zcount, kMaxGrid)));
}

bool empty(const ConvGeometry& g, int oy0, int oy1) {
  return g.batch <= 0 || g.width <= 0 || g.height <= 0 || g.out_w <= 0 || oy1 <= oy0 ||
         g.group_channels() <= 0 || g.size <= 0 || g.stride <= 0;
}

// The input rows col2im adds to: iy = oy*stride - pad + ky, oy in [oy0, oy1), ky in [0, size).
void receiving_rows(const ConvGeometry& g, int oy0, int oy1, int* lo, int* hi) {
  *lo = std::max(0, oy0 * g.stride - g.pad);
  *hi = std::min(g.height - 1, (oy1 - 1) * g.stride - g.pad + g.size - 1);
}

// A thread index stays below run + 2^24 (grid x * block x): 32 bits do while run < 2^31.
constexpr int64_t kSmallRun = int64_t(1) << 31;

}  // namespace

void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols) {
  if (empty(g, oy0, oy1)) return;
  const ColArgs a = col_args(g, c0, oy0, oy1);
  const int64_t run = int64_t(g.out_w) * g.batch;
  dim3 grid, block;
  launch_shape(run, oy1 - oy0, a.channels, &grid, &block);
  if (run < kSmallRun)
    im2col_kernel<uint32_t><<<grid, block, 0, current_stream()>>>(x, cols, a);
  else
    im2col_kernel<uint64_t><<<grid, block, 0, current_stream()>>>(x, cols, a);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx) {
  if (empty(g, oy0, oy1)) return;
  const ColArgs a = col_args(g, c0, oy0, oy1);
  int iy_lo, iy_hi;
  receiving_rows(g, oy0, oy1, &iy_lo, &iy_hi);
  if (iy_lo > iy_hi) return;
  const int64_t run = int64_t(g.width) * g.batch;
  dim3 grid, block;
  launch_shape(run, iy_hi - iy_lo + 1, a.channels, &grid, &block);
  if (run < kSmallRun)
    col2im_kernel<uint32_t><<<grid, block, 0, current_stream()>>>(cols, dx, a, iy_lo, iy_hi);
  else
    col2im_kernel<uint64_t><<<grid, block, 0, current_stream()>>>(cols, dx, a, iy_lo, iy_hi);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

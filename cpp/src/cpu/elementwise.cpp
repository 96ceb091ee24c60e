// CPU elementwise helpers: scaled add/copy (axpby), fill, copy, transpose and the sum of squares.
#include <algorithm>
#include <vector>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {

namespace {
// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

CONVNET_CPU_CLONES
void axpby(float scale, const float* src, float* dst, int64_t n, bool accumulate) {
  if (accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] += scale * src[i];
  } else {
    // dst is never read here, so garbage (NaN) in it cannot leak into the result.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = scale * src[i];
  }
}

void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  // 64 x 64 tiles (16 KiB read, 16 KiB written): a tile's rows are read and its columns written
  // while both stay in L1; the naive loop read one float per cache line of a 77 MB batch.
  constexpr int64_t kTile = 64;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t rt = 0; rt < row_tiles; ++rt)
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      const int64_t r1 = std::min(rows, (rt + 1) * kTile), c1 = std::min(cols, (ct + 1) * kTile);
      for (int64_t c = ct * kTile; c < c1; ++c)
        for (int64_t r = rt * kTile; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
}

void fill(float* dst, int64_t n, float value) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

// src and dst are either the same pointer (nothing to do) or disjoint ranges.
void copy(const float* src, float* dst, int64_t n) {
  if (src == dst || n <= 0) return;
  if (n < kParallelMin) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
    return;
  }
  // Large copies: fixed-size blocks, one memcpy each, shared among the threads.
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kBlock, len = std::min(kBlock, n - i0);
    std::memcpy(dst + i0, src + i0, size_t(len) * sizeof(float));
  }
}

// Fixed blocks summed in double, then the block sums in order: the result does not depend on
// the number of threads (a resumed run reports the same gradient norms).
double sum_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 0)));
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
    double s = 0;
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]) * x[i];
    partial[size_t(b)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

double sum_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& ns) {
  double total = 0;
  for (size_t t = 0; t < xs.size(); ++t) total += sum_squares(xs[t], ns[t]);
  return total;
}

}  // namespace convnet::cpu

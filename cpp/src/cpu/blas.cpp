// CPU GEMM through OpenBLAS's CBLAS interface (system library or the scipy-openblas32 wheel,
// whose symbols carry a `scipy_` prefix), and the thread count shared with our OpenMP loops.
//
// One thread pool for everything: OpenBLAS runs single-threaded and we split each large GEMM
// into column (or row) blocks, or slices of a long reduction, across OpenMP threads. Letting
// OpenBLAS's own pthreads pool run beside OpenMP's made the two spin against each other: a
// training step was 2-6x slower. Results are bitwise the same for any number of threads on one
// machine (see gemm).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"

#ifdef CONVNET_SCIPY_OPENBLAS
#include <cblas.h>
#define CONVNET_SGEMM scipy_cblas_sgemm
#define CONVNET_BLAS_SET_THREADS scipy_openblas_set_num_threads
#define CONVNET_BLAS_NAME "OpenBLAS (scipy-openblas32 wheel)"
#define CONVNET_BLAS_CONFIG scipy_openblas_get_config
#define CONVNET_BLAS_CORE scipy_openblas_get_corename
#else
#include <cblas.h>
#define CONVNET_SGEMM cblas_sgemm
#define CONVNET_BLAS_SET_THREADS openblas_set_num_threads
#define CONVNET_BLAS_NAME "OpenBLAS (system)"
#define CONVNET_BLAS_CONFIG openblas_get_config
#define CONVNET_BLAS_CORE openblas_get_corename
#endif

namespace convnet::cpu {

namespace {

void blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { CONVNET_BLAS_SET_THREADS(1); });
}

// One single-threaded SGEMM on the block of C given by rows [m0, m0+mc) and columns [n0, n0+nc).
void gemm_block(bool ta, bool tb, int m0, int mc, int n0, int nc, int k, float alpha,
                const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  const float* ab = ta ? a + m0 : a + int64_t(m0) * lda;  // row m0 of op(A)
  const float* bb = tb ? b + int64_t(n0) * ldb : b + n0;  // column n0 of op(B)
  CONVNET_SGEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, mc,
                nc, k, alpha, ab, lda, bb, ldb, beta, c + int64_t(m0) * ldc + n0, ldc);
}

// How many slices a long reduction is cut into, from the GEMM's size alone, never from the
// thread count (slices are summed separately, so their number changes the rounding; a run
// resumed with another --threads must compute the same bits): about kWorkPerPart multiply-adds
// each, at most kMaxReductionParts (each slice beyond the first costs a partial product of C and
// its addition).
constexpr double kWorkPerPart = 4e6;
constexpr int kMaxReductionParts = 8;

int reduction_parts(double work) {
  return int(std::clamp(std::floor(work / kWorkPerPart), 1.0, double(kMaxReductionParts)));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  blas_single_threaded();
  const double work = double(m) * n * k;
  if (work < kWorkPerPart) {
    gemm_block(trans_a, trans_b, 0, m, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // No threads inside another parallel region; the arithmetic is the same either way.
  const bool threaded = omp_get_max_threads() > 1 && !omp_in_parallel();
  if (k >= 8 * std::max(m, n)) {
    // A long reduction (weight gradients: k = OH*OW*N): splitting C would make every piece pack
    // all of the long operand; split k instead and add the partial products, in part order.
    const int64_t wanted = reduction_parts(work), kb = (k + wanted - 1) / wanted;
    const int parts = int((k + kb - 1) / kb);  // none of them empty
    std::vector<float> partial(size_t(parts - 1) * m * n);
#pragma omp parallel for schedule(static) if (threaded)
    for (int p = 0; p < parts; ++p) {
      const int k0 = int(p * kb), kc = int(std::min<int64_t>(kb, k - k0));
      const float* ap = trans_a ? a + int64_t(k0) * lda : a + k0;  // columns k0.. of op(A)
      const float* bp = trans_b ? b + k0 : b + int64_t(k0) * ldb;  // rows k0.. of op(B)
      if (p == 0)
        CONVNET_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, m, n, kc, alpha, ap, lda, bp, ldb, beta, c, ldc);
      else
        CONVNET_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, m, n, kc, alpha, ap, lda, bp, ldb, 0.f,
                      partial.data() + size_t(p - 1) * m * n, n);
    }
#pragma omp parallel for schedule(static) if (threaded)
    for (int i = 0; i < m; ++i)
      for (int p = 1; p < parts; ++p) {
        const float* src = partial.data() + (size_t(p - 1) * m + i) * n;
        float* dst = c + int64_t(i) * ldc;
        for (int j = 0; j < n; ++j) dst[j] += src[j];
      }
    return;
  }
  // Split the longer side of C into one block per processor of this machine (what OpenMP's
  // default thread count is), in multiples of 16 (whole vectors). Not per thread: OpenBLAS's
  // kernels may compute a column by another path at the end of a call (its Haswell kernels, which
  // AVX2 CPUs get, do for the last 8 columns of every call), so a block edge that moved with
  // --threads would change the bits, and a run resumed with other --threads would drift.
  const int threads = threaded ? omp_get_max_threads() : 1;
  const bool split_columns = n >= m;
  const int extent = split_columns ? n : m;
  static const int machine_blocks = std::max(1, omp_get_num_procs());
  const int block = std::max(16, ((extent + machine_blocks - 1) / machine_blocks + 15) / 16 * 16);
  const int blocks = (extent + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(std::min(threads, blocks)) if (threaded)
  for (int i = 0; i < blocks; ++i) {
    const int start = i * block, size = std::min(block, extent - start);
    if (split_columns)
      gemm_block(trans_a, trans_b, 0, m, start, size, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
      gemm_block(trans_a, trans_b, start, size, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

bool blas_call_edges_change_bits() {
  static const bool changes = [] {
    blas_single_threaded();
    const int m = 16, n = 64, k = 64;  // large enough for the kernels a training GEMM meets
    std::vector<float> a(size_t(m) * k), b(size_t(k) * n), whole(size_t(m) * n), halves(whole.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = float((i * 7919) % 97) / 97.f - 0.5f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = float((i * 104729) % 89) / 89.f - 0.5f;
    gemm_block(false, false, 0, m, 0, n, k, 1.f, a.data(), k, b.data(), n, 0.f, whole.data(), n);
    for (int n0 : {0, n / 2})
      gemm_block(false, false, 0, m, n0, n / 2, k, 1.f, a.data(), k, b.data(), n, 0.f, halves.data(), n);
    return std::memcmp(whole.data(), halves.data(), whole.size() * sizeof(float)) != 0;
  }();
  return changes;
}

void set_num_threads(int n) {
  if (n <= 0) return;
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

const char* blas_name() {
  static const std::string name = std::string(CONVNET_BLAS_NAME) + ": " + CONVNET_BLAS_CONFIG() +
                                  ", kernels for " + CONVNET_BLAS_CORE();
  return name.c_str();
}

}  // namespace convnet::cpu

// CPU GEMM through OpenBLAS's CBLAS interface (system library or the scipy-openblas32 wheel,
// whose symbols carry a `scipy_` prefix), and the thread count shared with our OpenMP loops.
#include <omp.h>

#include "cpu/cpu_ops.h"

#ifdef CONVNET_SCIPY_OPENBLAS
#include <cblas.h>
#define CONVNET_SGEMM scipy_cblas_sgemm
#define CONVNET_BLAS_SET_THREADS scipy_openblas_set_num_threads
#define CONVNET_BLAS_GET_THREADS scipy_openblas_get_num_threads
#define CONVNET_BLAS_NAME "OpenBLAS (scipy-openblas32 wheel)"
#else
#include <cblas.h>
#define CONVNET_SGEMM cblas_sgemm
#define CONVNET_BLAS_SET_THREADS openblas_set_num_threads
#define CONVNET_BLAS_GET_THREADS openblas_get_num_threads
#define CONVNET_BLAS_NAME "OpenBLAS (system)"
#endif

namespace convnet::cpu {

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  CONVNET_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void set_num_threads(int n) {
  if (n <= 0) return;
  CONVNET_BLAS_SET_THREADS(n);
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

const char* blas_name() { return CONVNET_BLAS_NAME; }

}  // namespace convnet::cpu

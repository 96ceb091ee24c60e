// cuda_emu: cuBLAS SGEMM on the host BLAS, with cuBLAS's argument checks and the operands checked
// to lie in memory of the handle's device (see include/cublas_v2.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cublas_v2.h"

#ifdef CONVNET_SCIPY_OPENBLAS
#include <cblas.h>
#define CUDA_EMU_SGEMM scipy_cblas_sgemm
#else
#include <cblas.h>
#define CUDA_EMU_SGEMM cblas_sgemm
#endif

struct cuda_emu_cublas {
  cudaStream_t stream = nullptr;
  int device = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

// TF32 tensor cores read each operand with a 10-bit mantissa (rounded to nearest, ties away from
// zero) and accumulate in fp32: the operands are rounded so, then multiplied in fp32.
std::vector<float> to_tf32(const float* x, size_t count) {
  std::vector<float> out(x, x + count);
  for (float& v : out) {
    if (!std::isfinite(v)) continue;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits = (bits + 0x1000u) & ~0x1FFFu;
    std::memcpy(&v, &bits, 4);
  }
  return out;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cuda_emu_cublas;
  cudaGetDevice(&(*handle)->device);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (stream && cuda_emu::stream_device(stream) != handle->device) return CUBLAS_STATUS_INVALID_VALUE;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !cuda_emu::on_device(workspace, bytes, handle->device)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                           int m, int n, int k, const float* alpha, const float* a, int lda,
                           const float* b, int ldb, const float* beta, float* c, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  // Column-major: op(A) is m x k, op(B) k x n, C m x n.
  const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
  const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  auto span = [](int rows, int cols, int ld) {
    return rows == 0 || cols == 0 ? size_t(0) : sizeof(float) * (size_t(cols - 1) * size_t(ld) + size_t(rows));
  };
  const int dev = handle->device;
  if ((k > 0 && (!cuda_emu::on_device(a, span(a_rows, a_cols, lda), dev) ||
                 !cuda_emu::on_device(b, span(b_rows, b_cols, ldb), dev))) ||
      !cuda_emu::on_device(c, span(m, n, ldc), dev))
    return CUBLAS_STATUS_EXECUTION_FAILED;  // on a GPU: an illegal address, later
  const float al = *alpha, be = *beta;  // host pointer mode: read at the call
  const bool tf32 = handle->math == CUBLAS_TF32_TENSOR_OP_MATH;
  const size_t a_count = span(a_rows, a_cols, lda) / 4, b_count = span(b_rows, b_cols, ldb) / 4;
  cuda_emu::submit_host_work(handle->stream, "cublasSgemm", [=] {
    std::vector<float> a32, b32;
    if (tf32) {
      a32 = to_tf32(a, a_count);
      b32 = to_tf32(b, b_count);
    }
    CUDA_EMU_SGEMM(CblasColMajor, transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                   transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, al,
                   tf32 ? a32.data() : a, lda, tf32 ? b32.data() : b, ldb, be, c, ldc);
  }, {{a, false}, {b, false}, {c, true}});
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "success"
                                         : "reported by the cuBLAS emulation (cuda_emu): bad arguments or operands outside device memory";
}

// Row-major GEMM on cuBLAS (column-major): C^T = op(B)^T op(A)^T, so swap the operands.
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {

namespace {
// One handle per device, created on first use and kept for the life of the process.
cublasHandle_t handle_for(int device) {
  static std::mutex mu;
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(handles.size())) handles.resize(device + 1, nullptr);
  if (!handles[device]) {
    CONVNET_CUDA_CHECK(cudaSetDevice(device));
    CONVNET_CUBLAS_CHECK(cublasCreate(&handles[device]));
  }
  return handles[device];
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc, int device) {
  cublasHandle_t h = handle_for(device);
  CONVNET_CUDA_CHECK(cudaSetDevice(device));
  CONVNET_CUBLAS_CHECK(cublasSgemm(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a,
                                   lda, &beta, c, ldc));
}

}  // namespace convnet::cuda

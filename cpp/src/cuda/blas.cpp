// Row-major GEMM on cuBLAS (column-major): C^T = op(B)^T op(A)^T, so swap the operands. One
// handle per device, bound to the device's compute stream, with the device's math mode: fp32 is
// cuBLAS's default math (full fp32 compute, as PyTorch with allow_tf32 off); pedantic math would
// add nothing to SGEMM's precision and is documented for debugging, possibly slower.
#include <deque>
#include <mutex>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {

namespace {
struct Handle {
  cublasHandle_t handle = nullptr;
  MathMode mode = MathMode::Fp32;
  void* workspace = nullptr;  // held for the life of the process, like the handle
};

// cuBLAS's advice for Hopper (4 MiB suffices before it). A workspace of our own means cuBLAS
// never allocates: not during a graph capture (before CUDA 12.2 it took a fresh block for every
// captured graph), and its bytes count in cuda_memory_stats like any tensor's.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
std::mutex mu;
std::deque<Handle>& handles() {  // a deque: references stay valid when it grows
  static std::deque<Handle> h;
  return h;
}

Handle& handle_for(int device) {
  std::lock_guard<std::mutex> lock(mu);
  auto& hs = handles();
  if (device >= static_cast<int>(hs.size())) hs.resize(device + 1);
  Handle& h = hs[device];
  if (h.handle) return h;
  // Published only once fully set up: a failure here leaves no half-configured handle behind.
  set_device(device);
  cublasHandle_t handle = nullptr;
  CONVNET_CUBLAS_CHECK(cublasCreate(&handle));
  void* workspace = nullptr;
  try {
    CONVNET_CUBLAS_CHECK(cublasSetStream(handle, stream(device)));
    // After cublasSetStream, which puts the default workspace back.
    workspace = allocate(kWorkspaceBytes, device);
    CONVNET_CUBLAS_CHECK(cublasSetWorkspace(handle, workspace, kWorkspaceBytes));
    CONVNET_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  } catch (...) {
    cublasDestroy(handle);
    if (workspace) release(workspace, device);
    throw;
  }
  h.handle = handle;
  h.workspace = workspace;
  return h;
}
}  // namespace

void set_math_mode(int device, MathMode mode) {
  Handle& h = handle_for(device);
  if (h.mode == mode) return;
  CONVNET_CUBLAS_CHECK(cublasSetMathMode(
      h.handle, mode == MathMode::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  h.mode = mode;
}

MathMode math_mode(int device) { return handle_for(device).mode; }

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  int device = 0;
  CONVNET_CUDA_CHECK(cudaGetDevice(&device));
  Handle& h = handle_for(device);
  CONVNET_CUBLAS_CHECK(cublasSgemm(h.handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a,
                                   lda, &beta, c, ldc));
}

}  // namespace convnet::cuda

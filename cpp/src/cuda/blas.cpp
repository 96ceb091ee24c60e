// Row-major GEMM on cuBLAS (column-major): C^T = op(B)^T op(A)^T, so swap the operands. One
// handle per lane of each device (a handle is bound to one stream, and two threads must not share
// it), with the device's math mode: fp32 is cuBLAS's default math (full fp32 compute, as PyTorch
// with allow_tf32 off); pedantic math would add nothing to SGEMM's precision and is documented
// for debugging, possibly slower.
#include <map>
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
std::map<std::pair<int, int>, Handle> handles;  // (device, lane); a map: references stay valid
std::map<int, MathMode> modes;                  // per device; fp32 where absent

// This thread's lane's handle of `device`, set to the device's math mode.
Handle& handle_for(int device) {
  std::lock_guard<std::mutex> lock(mu);
  Handle& h = handles[{device, lane()}];
  if (!h.handle) {
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
  }
  const MathMode wanted = modes.count(device) ? modes[device] : MathMode::Fp32;
  if (h.mode != wanted) {
    CONVNET_CUBLAS_CHECK(cublasSetMathMode(
        h.handle, wanted == MathMode::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    h.mode = wanted;
  }
  return h;
}
}  // namespace

void set_math_mode(int device, MathMode mode) {
  {
    std::lock_guard<std::mutex> lock(mu);
    modes[device] = mode;
  }
  handle_for(device);  // this lane's handle, made and set now (outside any graph capture)
}

void destroy_blas_handles(int device) {
  synchronize(device);
  std::lock_guard<std::mutex> lock(mu);
  set_device(device);
  for (auto it = handles.begin(); it != handles.end();) {
    if (it->first.first != device) {
      ++it;
      continue;
    }
    cublasDestroy(it->second.handle);
    release(it->second.workspace, device);
    it = handles.erase(it);
  }
}

MathMode math_mode(int device) {
  std::lock_guard<std::mutex> lock(mu);
  return modes.count(device) ? modes[device] : MathMode::Fp32;
}

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

// CUDA device discovery, allocation and copies (plain cudaMalloc for now; the caching allocator
// comes with the CUDA kernels).
#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

void check_device(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw RuntimeError(detail::concat("cuda:", device, " does not exist: ", n,
                                      " CUDA device(s) visible"));
}

void* allocate(size_t bytes, int device) {
  check_device(device);
  CONVNET_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeError(detail::concat("cudaMalloc of ", bytes, " bytes on cuda:", device,
                                      " failed: ", cudaGetErrorString(err)));
  }
  return p;
}

void release(void* ptr, int device) noexcept {
  if (cudaSetDevice(device) == cudaSuccess) cudaFree(ptr);
}

void copy(void* dst, const Device& dst_device, const void* src, const Device& src_device,
          size_t bytes) {
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    CONVNET_CUDA_CHECK(cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, bytes));
    return;
  }
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  CONVNET_CUDA_CHECK(cudaSetDevice(device));
  CONVNET_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

}  // namespace convnet::cuda

// Fill a float buffer with one value.
#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {

__global__ void fill_kernel(float* dst, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

void fill(float* dst, int64_t n, float value, int device) {
  if (n == 0) return;
  CONVNET_CUDA_CHECK(cudaSetDevice(device));
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535);
  fill_kernel<<<static_cast<unsigned>(blocks), threads>>>(dst, n, value);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

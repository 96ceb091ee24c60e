// Every CUDA runtime and cuBLAS call goes through these: a failure throws RuntimeError naming the
// call, the file and line, and the library's own error text.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "convnet/error.h"

namespace convnet::cuda {

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess)
    throw RuntimeError(detail::concat("CUDA error in ", call, " (", file, ":", line, "): ",
                                      cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

inline void check_cublas(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw RuntimeError(detail::concat("cuBLAS error in ", call, " (", file, ":", line, "): ",
                                      cublasGetStatusName(st), ": ", cublasGetStatusString(st)));
}

}  // namespace convnet::cuda

#define CONVNET_CUDA_CHECK(call) ::convnet::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define CONVNET_CUBLAS_CHECK(call) ::convnet::cuda::check_cublas((call), #call, __FILE__, __LINE__)

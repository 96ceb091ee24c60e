// The CUDA backend's entry points used by the core. This part is the plumbing: device
// discovery, memory, copies and cuBLAS GEMM. Compiled whenever nvcc is found (CONVNET_WITH_CUDA).
#pragma once
#include <cstddef>
#include <cstdint>

#include "convnet/device.h"

namespace convnet::cuda {

// Devices visible to the runtime; 0 (never an exception) when there is no driver or no GPU.
int device_count();
// Throws RuntimeError naming the device when it does not exist.
void check_device(int device);

void* allocate(size_t bytes, int device);
void release(void* ptr, int device) noexcept;
// Any direction among host and CUDA devices; synchronous.
void copy(void* dst, const Device& dst_device, const void* src, const Device& src_device,
          size_t bytes);
void fill(float* dst, int64_t n, float value, int device);

// Row-major C = alpha op(A) op(B) + beta C through cuBLAS (column-major), on `device`.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc, int device);

}  // namespace convnet::cuda

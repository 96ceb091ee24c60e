// CUDA elementwise helpers. Reference: cpu/elementwise.cpp (axpby, fill, copy, sum_squares).
// Design: grid-stride loops, one element per thread per step (consecutive threads, consecutive
// elements); copy is a device-to-device cudaMemcpyAsync on the compute stream.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the loops stride beyond this

unsigned blocks_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// dst (+)= scale * src. src may be dst. Overwrite mode never reads dst (it may hold garbage).
template <bool kAccumulate>
__global__ void axpby_kernel(float scale, const float* src, float* dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (kAccumulate) dst[i] += scale * src[i];
    else dst[i] = scale * src[i];
  }
}

__global__ void fill_kernel(float* dst, int64_t n, float value) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

// One double partial sum per block over a fixed stride pattern, reduced in shared memory in a
// fixed tree order: no atomics, so the result is the same on every run.
__global__ void sum_squares_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double cache[kThreads];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * x[i];
  cache[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) cache[threadIdx.x] += cache[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = cache[0];
}

}  // namespace

void axpby(float scale, const float* src, float* dst, int64_t n, bool accumulate) {
  if (n <= 0) return;
  if (accumulate)
    axpby_kernel<true><<<blocks_for(n), kThreads, 0, current_stream()>>>(scale, src, dst, n);
  else
    axpby_kernel<false><<<blocks_for(n), kThreads, 0, current_stream()>>>(scale, src, dst, n);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void fill(float* dst, int64_t n, float value) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(dst, n, value);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

// src and dst are either the same pointer (nothing to do) or disjoint ranges.
void copy(const float* src, float* dst, int64_t n) {
  if (src == dst || n <= 0) return;
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * sizeof(float),
                                     cudaMemcpyDeviceToDevice, current_stream()));
}

namespace {

unsigned sum_squares_blocks(int64_t n) { return std::min(blocks_for(n), 1024u); }

}  // namespace

// One launch per tensor into one buffer of block partials, one copy back, one sync: the trainer
// calls this once per step, after backward. Each tensor's partials are added in order, then the
// tensors in order, so the total equals adding sum_squares(x) of each tensor in turn, bit for bit.
double sum_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& ns) {
  std::vector<size_t> offset(xs.size() + 1, 0);
  for (size_t t = 0; t < xs.size(); ++t)
    offset[t + 1] = offset[t] + (ns[t] > 0 ? sum_squares_blocks(ns[t]) : 0);
  if (offset.back() == 0) return 0;
  Scratch scratch(offset.back() * sizeof(double));
  auto* partial = static_cast<double*>(scratch.ptr);
  for (size_t t = 0; t < xs.size(); ++t) {
    if (ns[t] <= 0) continue;
    sum_squares_kernel<<<sum_squares_blocks(ns[t]), kThreads, 0, current_stream()>>>(
        xs[t], ns[t], partial + offset[t]);
    CONVNET_CUDA_CHECK(cudaGetLastError());
  }
  std::vector<double> host(offset.back());
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(host.data(), partial, host.size() * sizeof(double),
                                     cudaMemcpyDeviceToHost, current_stream()));
  CONVNET_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
  double total = 0;
  for (size_t t = 0; t < xs.size(); ++t) {
    double s = 0;
    for (size_t b = offset[t]; b < offset[t + 1]; ++b) s += host[b];
    total += s;
  }
  return total;
}

// The vectors spelt out: with braces alone, ({x}, {n}) picks this overload again (endless recursion).
double sum_squares(const float* x, int64_t n) {
  return sum_squares(std::vector<const float*>{x}, std::vector<int64_t>{n});
}

}  // namespace convnet::cuda

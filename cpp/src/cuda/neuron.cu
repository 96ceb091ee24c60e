// CUDA neurons and biases. Reference: cpu/neuron.cpp (same functions; tanh/logistic use CUDA's
// tanhf/expf, within a few ulp of the CPU's Cephes versions; the derivatives go through y).
// Design: elementwise ops are grid-stride loops, one element per thread per step (coalesced).
// bias + neuron: 2-D, x along a row (one bias per row, no division), y over rows. bias_backward:
// one block per row, each thread sums a fixed strided slice in double, then a fixed tree
// (warp shuffles, then shared memory): deterministic, no atomics.
#include <algorithm>
#include <cstdint>

#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the loops stride beyond this
constexpr int kReduceThreads = 512;

unsigned blocks_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// The neuron functions (f) and their derivatives written through the output (df(y, dy)).
struct Linear {
  __device__ float f(float x) const { return x; }
  __device__ float df(float, float dy) const { return dy; }
};
struct Relu {
  __device__ float f(float x) const { return x > 0.f ? x : 0.f; }
  __device__ float df(float y, float dy) const { return y > 0.f ? dy : 0.f; }
};
struct LeakyRelu {
  float slope;
  __device__ float f(float x) const { return x > 0.f ? x : slope * x; }
  __device__ float df(float y, float dy) const { return y > 0.f ? dy : slope * dy; }
};
struct Tanh {
  __device__ float f(float x) const { return tanhf(x); }
  __device__ float df(float y, float dy) const { return dy * (1.f - y * y); }
};
struct Logistic {
  // expf(-x) overflows to inf for x < -88.7: 1 / inf = 0, as it should.
  __device__ float f(float x) const { return 1.f / (1.f + expf(-x)); }
  __device__ float df(float y, float dy) const { return dy * y * (1.f - y); }
};
struct Softsign {
  __device__ float f(float x) const { return x / (1.f + fabsf(x)); }
  __device__ float df(float y, float dy) const {
    const float t = 1.f - fabsf(y);
    return dy * t * t;
  }
};

template <class Fn>
void with_neuron(const Neuron& nr, Fn&& fn) {
  switch (nr.type) {
    case NeuronType::Linear: fn(Linear{}); return;
    case NeuronType::Relu: fn(Relu{}); return;
    case NeuronType::LeakyRelu: fn(LeakyRelu{nr.slope}); return;
    case NeuronType::Tanh: fn(Tanh{}); return;
    case NeuronType::Logistic: fn(Logistic{}); return;
    case NeuronType::Softsign: fn(Softsign{}); return;
  }
}

// y[r, j] = f(y[r, j] + bias[r]); threadIdx.x / blockIdx.x along j, threadIdx.y / blockIdx.y
// over rows.
template <class F>
__global__ void bias_neuron_kernel(float* y, const float* __restrict__ bias, int rows,
                                   int64_t inner, F f) {
  for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += gridDim.y * blockDim.y) {
    const float b = bias ? bias[r] : 0.f;
    float* row = y + int64_t(r) * inner;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < inner;
         j += int64_t(gridDim.x) * blockDim.x)
      row[j] = f.f(row[j] + b);
  }
}

// x and y may be the same array (in place): each element is read, then written, by one thread.
template <class F>
__global__ void forward_kernel(const float* x, float* y, int64_t n, F f) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = f.f(x[i]);
}

// dx may alias dy. Overwrite mode never reads dx (it may hold garbage).
template <class F, bool kAccumulate>
__global__ void backward_kernel(const float* y, const float* dy, float* dx, int64_t n, F f) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = f.df(y[i], dy[i]);
    if (kAccumulate) dx[i] += g;
    else dx[i] = g;
  }
}

// db[r] (+)= sum_j dy[r, j]; one block of kReduceThreads per row (grid-stride over rows).
__global__ void __launch_bounds__(kReduceThreads)
    bias_backward_kernel(const float* __restrict__ dy, float* db, int rows, int64_t inner,
                         bool accumulate) {
  __shared__ double warp_sums[kReduceThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = dy + int64_t(r) * inner;
    double s = 0;
    for (int64_t j = threadIdx.x; j < inner; j += kReduceThreads) s += row[j];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (warp == 0) {
      s = lane < kReduceThreads / 32 ? warp_sums[lane] : 0.0;
      for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
      if (lane == 0) db[r] = accumulate ? db[r] + float(s) : float(s);
    }
    __syncthreads();  // warp_sums is reused by the next row
  }
}

}  // namespace

void bias_neuron_forward(float* y, const float* bias, int rows, int64_t inner, const Neuron& nr) {
  if (rows <= 0 || inner <= 0) return;
  if (!bias && nr.type == NeuronType::Linear) return;  // identity
  // Short rows (a fully connected layer's batch) share a block between several rows.
  const int bx = inner >= kThreads ? kThreads : int((inner + 31) / 32 * 32);
  const int by = kThreads / bx;
  const dim3 block(bx, by);
  const dim3 grid(unsigned(std::min<int64_t>((inner + bx - 1) / bx, kMaxBlocks)),
                  unsigned(std::min<int64_t>((rows + by - 1) / by, 65535)));
  with_neuron(nr, [&](auto f) {
    bias_neuron_kernel<<<grid, block, 0, current_stream()>>>(y, bias, rows, inner, f);
  });
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void neuron_forward(const float* x, float* y, int64_t n, const Neuron& nr) {
  if (n <= 0) return;
  if (nr.type == NeuronType::Linear) {
    copy(x, y, n);  // a no-op when in place
    return;
  }
  with_neuron(nr, [&](auto f) {
    forward_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, n, f);
  });
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void neuron_backward(const float* y, const float* dy, float* dx, int64_t n, const Neuron& nr,
                     bool accumulate) {
  if (n <= 0) return;
  with_neuron(nr, [&](auto f) {
    using F = decltype(f);
    if (accumulate)
      backward_kernel<F, true><<<blocks_for(n), kThreads, 0, current_stream()>>>(y, dy, dx, n, f);
    else
      backward_kernel<F, false><<<blocks_for(n), kThreads, 0, current_stream()>>>(y, dy, dx, n, f);
  });
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

void bias_backward(const float* dy, float* db, int rows, int64_t inner, bool accumulate) {
  if (rows <= 0) return;
  // inner == 0 still writes db = 0 (overwrite) like the CPU; the loop then reads nothing.
  const unsigned grid = unsigned(std::min<int64_t>(rows, kMaxBlocks));
  bias_backward_kernel<<<grid, kReduceThreads, 0, current_stream()>>>(dy, db, rows,
                                                                      std::max<int64_t>(inner, 0),
                                                                      accumulate);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

// The sum-of-squares cost's forward reduction. Reference: cpu/sum2_cost.cpp.
// Design: one thread per case walks the rows in the CPU's order, accumulating in double (the
// sums agree to double rounding; a GPU may fuse the multiply-add); neighbouring threads read neighbouring floats (CHWN), so
// each row is one coalesced read. A cost layer's input is small (scores or a code), so one pass
// over the rows per case is enough.
#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void sum_squares_per_case_kernel(const float* x, float* out, int64_t rows, int batch) {
  const int n = int(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= batch) return;
  double s = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double v = x[r * batch + n];
    s += v * v;
  }
  out[n] = float(s);
}

}  // namespace

void sum_squares_per_case(const float* x, float* out, int64_t rows, int batch) {
  if (batch <= 0) return;
  const unsigned blocks = unsigned((batch + kThreads - 1) / kThreads);
  sum_squares_per_case_kernel<<<blocks, kThreads, 0, current_stream()>>>(x, out, rows, batch);
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

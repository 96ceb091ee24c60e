// What the LRN kernels share (lrn.cu, lrn_pool.cu): how d^-beta is evaluated, and the launch
// shape (a thread per position j of inner, blockIdx.y over chunks of channels).
#pragma once
#include <algorithm>
#include <cstdint>

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
// Enough threads in flight to fill an H100 a few times over; below this, channels are split
// into chunks (blockIdx.y) so small `inner` still gets parallelism.
constexpr int64_t kTargetThreads = int64_t(1) << 20;

// How d^-beta is evaluated (cpu/lrn.cpp picks the same special cases).
enum PowKind : int { kThreeQuarters = 0, kHalf = 1, kOne = 2, kGeneral = 3 };

PowKind pow_kind(float beta) {
  if (beta == 0.75f) return kThreeQuarters;
  if (beta == 0.5f) return kHalf;
  if (beta == 1.0f) return kOne;
  return kGeneral;
}

__device__ __forceinline__ float neg_pow(float d, float beta, int kind) {
  switch (kind) {
    case kThreeQuarters: {
      const float r = rsqrtf(d);  // d^-1/2; d^-3/4 = r^3/2 (no overflow of d^3/2)
      return r * sqrtf(r);
    }
    case kHalf: return rsqrtf(d);
    case kOne: return __frcp_rn(d);
    default: return powf(d, -beta);
  }
}

struct Launch {
  dim3 grid, block;
  int chunk;  // channels per blockIdx.y
};

// min_chunk: the fewest channels a thread walks (a kernel that recomputes values at the edges
// of its chunk wants long chunks).
Launch launch_shape(int channels, int64_t inner, int min_chunk = 1) {
  int64_t chunks = (kTargetThreads + inner - 1) / inner;
  chunks = std::min<int64_t>(chunks, std::max(1, channels / min_chunk));
  chunks = std::clamp<int64_t>(chunks, 1, std::min<int64_t>(channels, 65535));
  const int chunk = int((channels + chunks - 1) / chunks);
  chunks = (channels + chunk - 1) / chunk;
  const int64_t xblocks = std::min<int64_t>((inner + kThreads - 1) / kThreads, 0x7fffffff);
  return {dim3(unsigned(xblocks), unsigned(chunks)), dim3(kThreads), chunk};
}

}  // namespace
}  // namespace convnet::cuda

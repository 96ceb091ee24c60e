// CUDA dropout (inverted). Reference: cpu/dropout.cpp: out (+)= in * mask / (1 - rate), with
// mask[i] = philox_uniform(seed, step, i) >= rate, bit-identical to the CPU's mask.
// Design: a thread owns one Philox block b (grid-stride): one philox4x32_10 call gives words
// 0..3 for elements 4b..4b+3, moved as one float4 when in and out are 16-byte aligned.
#include <algorithm>
#include <cstdint>

#include "convnet/philox.h"
#include "cuda/check.h"
#include "cuda/cuda_ops.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the loop strides beyond this

struct DropArgs {
  int64_t n;
  float rate, scale;
  uint32_t seed_lo, seed_hi, step_lo, step_hi;
};

// Element 4b + w's draw, as philox_uniform converts word w of counter block b.
__host__ __device__ __forceinline__ bool kept(uint32_t word, float rate) {
  return float(word >> 8) * (1.0f / 16777216.0f) >= rate;
}

// Dropped elements give exactly 0 (never in * scale, which is inf or NaN when rate >= 1). The
// product is rounded on its own (no FMA with the accumulate add), as on the CPU.
__host__ __device__ __forceinline__ float masked(float v, uint32_t word, const DropArgs& a) {
#if defined(__CUDA_ARCH__)
  return kept(word, a.rate) ? __fmul_rn(v, a.scale) : 0.f;
#else
  return kept(word, a.rate) ? v * a.scale : 0.f;
#endif
}

// Elements 4b .. min(4b + 4, n) - 1. kVec: in and out are 16-byte aligned. in may be out.
template <bool kAccumulate, bool kVec>
__host__ __device__ __forceinline__ void dropout_block(const float* in, float* out, int64_t b,
                                                       const DropArgs& a) {
  const uint64_t ub = uint64_t(b);
  const Philox4 r = philox4x32_10(uint32_t(ub), uint32_t(ub >> 32), a.step_lo, a.step_hi,
                                  a.seed_lo, a.seed_hi);
  const int64_t i0 = 4 * b;
  if (kVec && i0 + 4 <= a.n) {
    const float4 v = reinterpret_cast<const float4*>(in)[b];
    float4 o = make_float4(masked(v.x, r.v[0], a), masked(v.y, r.v[1], a),
                           masked(v.z, r.v[2], a), masked(v.w, r.v[3], a));
    if (kAccumulate) {
      const float4 d = reinterpret_cast<const float4*>(out)[b];
      o.x += d.x;
      o.y += d.y;
      o.z += d.z;
      o.w += d.w;
    }
    reinterpret_cast<float4*>(out)[b] = o;
  } else {
    for (int w = 0; w < 4; ++w) {
      const int64_t i = i0 + w;
      if (i >= a.n) break;
      const float m = masked(in[i], r.v[w], a);
      if (kAccumulate) out[i] += m;
      else out[i] = m;
    }
  }
}

template <bool kAccumulate, bool kVec>
__global__ void dropout_kernel(const float* in, float* out, DropArgs a) {
  const int64_t blocks = (a.n + 3) >> 2;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x)
    dropout_block<kAccumulate, kVec>(in, out, b, a);
}

DropArgs drop_args(int64_t n, float rate, uint64_t seed, uint64_t step) {
  DropArgs a;
  a.n = n;
  a.rate = rate;
  a.scale = 1.f / (1.f - rate);  // as the CPU rounds it
  a.seed_lo = uint32_t(seed);
  a.seed_hi = uint32_t(seed >> 32);
  a.step_lo = uint32_t(step);
  a.step_hi = uint32_t(step >> 32);
  return a;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate) {
  if (n <= 0) return;
  if (rate <= 0.f) {  // nothing dropped: a copy (or an add)
    if (accumulate) axpby(1.f, in, out, n, true);
    else copy(in, out, n);
    return;
  }
  const DropArgs a = drop_args(n, rate, seed, step);
  const int64_t pblocks = (n + 3) / 4;
  const dim3 grid(unsigned(std::min<int64_t>((pblocks + kThreads - 1) / kThreads, kMaxBlocks)));
  const bool vec = aligned16(in) && aligned16(out);
  cudaStream_t s = current_stream();
  if (accumulate) {
    if (vec) dropout_kernel<true, true><<<grid, kThreads, 0, s>>>(in, out, a);
    else dropout_kernel<true, false><<<grid, kThreads, 0, s>>>(in, out, a);
  } else {
    if (vec) dropout_kernel<false, true><<<grid, kThreads, 0, s>>>(in, out, a);
    else dropout_kernel<false, false><<<grid, kThreads, 0, s>>>(in, out, a);
  }
  CONVNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace convnet::cuda

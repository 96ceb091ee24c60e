// CUDA dropout (inverted). Reference: cpu/dropout.cpp: out (+)= in * mask / (1 - rate), with
// mask[i] = philox_uniform(seed, step, i) >= rate, bit-identical to the CPU's mask (i the
// element's counter in the global batch; a shard's elements take one thread each).
// Design: a thread owns one Philox block b (grid-stride): one philox4x32_10 call gives words
// 0..3 for elements 4b..4b+3, moved as one float4 when in and out are 16-byte aligned.
// The step is a kernel argument: a captured graph gets it patched before each replay
// (patch_dropout_step), from the node and arguments each launch records while a capture runs.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "convnet/philox.h"
#include "cuda/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/graph_nodes.h"

namespace convnet::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;  // the loop strides beyond this

struct DropArgs {
  int64_t n;
  float rate, scale;
  uint32_t seed_lo, seed_hi, step_lo, step_hi;
  // A shard of a global batch (ops.h BatchShard): element (r, c) of cols-wide rows draws counter
  // r * global_cols + offset + c. sharded false: element i draws counter i.
  bool sharded;
  int64_t cols, global_cols, offset;
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
  if (a.sharded) {  // one element per thread, each drawing its own counter's block
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += int64_t(gridDim.x) * blockDim.x) {
      const int64_t r = i / a.cols;
      const uint64_t counter = uint64_t(r * a.global_cols + a.offset + (i - r * a.cols)), b = counter >> 2;
      const Philox4 p = philox4x32_10(uint32_t(b), uint32_t(b >> 32), a.step_lo, a.step_hi, a.seed_lo, a.seed_hi);
      const float m = masked(in[i], p.v[counter & 3], a);
      if (kAccumulate) out[i] += m;
      else out[i] = m;
    }
    return;
  }
  const int64_t blocks = (a.n + 3) >> 2;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x)
    dropout_block<kAccumulate, kVec>(in, out, b, a);
}

DropArgs drop_args(int64_t n, float rate, uint64_t seed, uint64_t step, int64_t cols, int64_t global_cols,
                   int64_t offset) {
  DropArgs a;
  a.n = n;
  a.sharded = cols > 0 && (global_cols != cols || offset != 0);
  a.cols = cols;
  a.global_cols = global_cols;
  a.offset = offset;
  a.rate = rate;
  a.scale = 1.f / (1.f - rate);  // as the CPU rounds it
  a.seed_lo = uint32_t(seed);
  a.seed_hi = uint32_t(seed >> 32);
  a.step_lo = uint32_t(step);
  a.step_hi = uint32_t(step >> 32);
  return a;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The launches of this thread's graph capture, when one is running (graph.cpp).
thread_local std::vector<DropoutNode>* capture_sink = nullptr;

// The node a launch just added to the capture of stream s: the stream's only dependency.
cudaGraphNode_t last_captured_node(cudaStream_t s) {
  cudaStreamCaptureStatus status;
  const cudaGraphNode_t* deps = nullptr;
  size_t count = 0;
#if CUDART_VERSION >= 13000
  CONVNET_CUDA_CHECK(cudaStreamGetCaptureInfo(s, &status, nullptr, nullptr, &deps, nullptr, &count));
#else
  CONVNET_CUDA_CHECK(cudaStreamGetCaptureInfo(s, &status, nullptr, nullptr, &deps, &count));
#endif
  if (status != cudaStreamCaptureStatusActive || count != 1)
    throw RuntimeError(detail::concat("dropout: a graph capture is running on this thread, but "
                                      "the compute stream is not captured (status ", int(status),
                                      ", ", count, " dependencies)"));
  return deps[0];
}

template <bool kAccumulate, bool kVec>
void launch(const float* in, float* out, const DropArgs& a, dim3 grid, cudaStream_t s) {
  dropout_kernel<kAccumulate, kVec><<<grid, kThreads, 0, s>>>(in, out, a);
  CONVNET_CUDA_CHECK(cudaGetLastError());
  if (capture_sink) {
    DropoutNode d;
    d.node = last_captured_node(s);
    d.func = reinterpret_cast<void*>(dropout_kernel<kAccumulate, kVec>);
    d.grid = grid;
    d.block = dim3(kThreads);
    d.in = in;
    d.out = out;
    d.n = a.n;
    d.rate = a.rate;
    d.seed = uint64_t(a.seed_lo) | (uint64_t(a.seed_hi) << 32);
    d.cols = a.cols;
    d.global_cols = a.global_cols;
    d.offset = a.offset;
    capture_sink->push_back(d);
  }
}

}  // namespace

void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate, int64_t cols, int64_t global_cols, int64_t offset) {
  if (n <= 0) return;
  if (rate <= 0.f) {  // nothing dropped: a copy (or an add)
    if (accumulate) axpby(1.f, in, out, n, true);
    else copy(in, out, n);
    return;
  }
  const DropArgs a = drop_args(n, rate, seed, step, cols, global_cols, offset);
  const int64_t pblocks = a.sharded ? n : (n + 3) / 4;  // threads: per element, or per Philox block
  const dim3 grid(unsigned(std::min<int64_t>((pblocks + kThreads - 1) / kThreads, kMaxBlocks)));
  const bool vec = aligned16(in) && aligned16(out);
  cudaStream_t s = current_stream();
  if (accumulate) {
    if (vec) launch<true, true>(in, out, a, grid, s);
    else launch<true, false>(in, out, a, grid, s);
  } else {
    if (vec) launch<false, true>(in, out, a, grid, s);
    else launch<false, false>(in, out, a, grid, s);
  }
}

void record_dropout_launches(std::vector<DropoutNode>* sink) { capture_sink = sink; }

void patch_dropout_step(cudaGraphExec_t exec, const DropoutNode& d, uint64_t step) {
  DropArgs a = drop_args(d.n, d.rate, d.seed, step, d.cols, d.global_cols, d.offset);
  const float* in = d.in;
  float* out = d.out;
  void* args[] = {&in, &out, &a};
  cudaKernelNodeParams p = {};
  p.func = d.func;
  p.gridDim = d.grid;
  p.blockDim = d.block;
  p.sharedMemBytes = 0;
  p.kernelParams = args;  // copied by the call
  CONVNET_CUDA_CHECK(cudaGraphExecKernelNodeSetParams(exec, d.node, &p));
}

}  // namespace convnet::cuda

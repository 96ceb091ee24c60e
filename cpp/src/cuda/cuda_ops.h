// The CUDA backend: the same primitives as the CPU backend (cpu/cpu_ops.h), with the same
// signatures and meaning, on device pointers. The dispatcher (core/ops.cpp) makes the tensors'
// device current before calling; every kernel runs on that device's compute stream (stream()),
// asynchronously: results that the host needs (cost statistics, sums of squares) come back
// through explicit copies.
// Compiled whenever nvcc is found (CONVNET_WITH_CUDA); each .cu file in this folder holds one op
// family, and starts with the CPU reference it must match (cpu/<same name>.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "convnet/device.h"
#include "convnet/ops.h"

typedef struct CUstream_st* cudaStream_t;

namespace convnet::cuda {

// ---- devices, streams, memory (context.cpp, memory.cpp) ----

// Devices visible to the runtime; 0 (never an exception) when there is no driver or no GPU.
int device_count();
// Throws RuntimeError naming the device when it does not exist.
void check_device(int device);
// Makes `device` current for this thread (cheap when it already is).
void set_device(int device);
// The compute stream of `device`, created on first use. Kernels of one device run in order on it.
cudaStream_t stream(int device);
// The compute stream of the current device.
cudaStream_t current_stream();
void synchronize(int device);

// The caching allocator: freed blocks are kept per device and size class and reused, so the
// steady-state training step makes no cudaMalloc. release() never synchronises: blocks are
// reused only in stream order on the compute stream.
void* allocate(size_t bytes, int device);
void release(void* ptr, int device) noexcept;
struct MemoryStats {
  size_t current_bytes = 0;  // held by live tensors
  size_t peak_bytes = 0;     // max of current_bytes since start (or reset)
  size_t cached_bytes = 0;   // freed, kept for reuse
  size_t cuda_malloc_calls = 0;
};
// A block of the current device for one call's temporaries, released on every exit path.
struct Scratch {
  explicit Scratch(size_t bytes);  // memory.cpp
  ~Scratch() { release(ptr, device); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* ptr = nullptr;
  int device = 0;
};
// While a graph is captured on a device, the blocks it allocates or frees are kept for it
// alone (its replays write them) until free_graph_pool gives them back to the cache.
int begin_graph_pool(int device);
void end_graph_pool(int device) noexcept;
void free_graph_pool(int device, int id) noexcept;
MemoryStats memory_stats(int device);
void reset_peak(int device);
// Gives every cached block back to the driver, except those kept for a live CUDA graph.
void empty_cache(int device);

// Page-locked host memory for batch uploads (cudaHostAlloc), reused like device memory.
void* allocate_pinned(size_t bytes);
void release_pinned(void* ptr) noexcept;
// What the driver says of a host address: page-locked memory it can copy by DMA (for tests).
bool is_page_locked(const void* host_ptr);

// Any direction among host and CUDA devices. Host<->device copies are synchronous with respect
// to the host; device<->device copies are ordered on the destination's compute stream.
void copy(void* dst, const Device& dst_device, const void* src, const Device& src_device,
          size_t bytes);

// ---- CUDA graphs (graph.cpp) ----

// A stretch of work on one device's compute stream, captured once and replayed with one launch:
// no launch gaps between its kernels. Between begin() and end() nothing runs: kernels, copies and
// GEMMs are recorded. The work must not wait for the host (no synchronising copy), and the
// memory it uses must outlive the graph (blocks allocated or freed during the capture are kept
// for it by the allocator). Dropout kernels get the step of each replay (set_dropout_step).
class StepGraph {
 public:
  explicit StepGraph(int device);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  void begin();
  // Stops capturing and instantiates. Throws RuntimeError naming what failed.
  void end();
  // Stops a capture that failed half-way (an exception in the captured code); the graph is empty.
  void abandon() noexcept;
  bool ready() const;
  void set_dropout_step(uint64_t step);
  // Queues one replay on the device's compute stream.
  void launch();
  size_t nodes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- GEMM (blas.cpp) ----

// fp32: strict IEEE single precision; tf32: cuBLAS may use TF32 tensor cores (10-bit mantissa
// inputs, fp32 accumulation).
enum class MathMode { Fp32, Tf32 };
void set_math_mode(int device, MathMode mode);
MathMode math_mode(int device);
// Row-major C = alpha op(A) op(B) + beta C through cuBLAS (column-major), current device.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// ---- kernels: one per primitive of cpu/cpu_ops.h, same arguments, device pointers ----

// im2col.cu
void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols);
void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx);

// neuron.cu
void bias_neuron_forward(float* y, const float* bias, int rows, int64_t inner, const Neuron& nr);
void neuron_forward(const float* x, float* y, int64_t n, const Neuron& nr);
void neuron_backward(const float* y, const float* dy, float* dx, int64_t n, const Neuron& nr,
                     bool accumulate);
void bias_backward(const float* dy, float* db, int rows, int64_t inner, bool accumulate);

// lrn.cu
void lrn_forward(const float* x, float* y, float* denom, int channels, int64_t inner,
                 const LrnParams& p);
void lrn_backward(const float* x, const float* y, const float* denom, const float* dy, float* dx,
                  int channels, int64_t inner, const LrnParams& p, bool accumulate);

// pool.cu
void pool_forward(const float* x, float* y, const PoolGeometry& g);
void pool_backward(const float* x, const float* y, const float* dy, float* dx,
                   const PoolGeometry& g, bool accumulate);

// lrn_pool.cu: pool_backward of y (geometry g) then lrn_backward, without writing the gradient
// of y; channels and inner come from g. Reference: the two CPU primitives in sequence.
void lrn_pool_backward(const float* x, const float* y, const float* denom, const float* dpooled,
                       float* dx, const LrnParams& lp, const PoolGeometry& g, bool accumulate);

// dropout.cu
void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate);

// softmax_cost.cu. Labels are not checked beforehand: a case whose label is no class index gets
// flag bit 2 (cost_stats reports it), and nothing is read out of bounds.
void softmax_cost_forward(const float* logits, const float* labels, float* probs, int classes,
                          int batch, double* case_cost, int32_t* case_flags);
void softmax_cost_backward(const float* probs, const float* labels, float scale, float* dlogits,
                           int classes, int batch, bool accumulate);

// sum2_cost.cu
void sum_squares_per_case(const float* x, float* out, int64_t rows, int batch);

// sgd.cu
void sgd_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                float weight_decay);
void nesterov_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                     float weight_decay);
// keep = 1 - lr * weight_decay; step_size = lr / (1 - beta1^t); inv_bc2 = 1 / sqrt(1 - beta2^t);
// c1 = 1 - beta1, c2 = 1 - beta2 (each rounded once from double).
void adamw_update(float* w, const float* grad, float* m, float* v, int64_t n, float keep,
                  float step_size, float inv_bc2, float beta1, float c1, float beta2, float c2,
                  float eps);

// elementwise.cu
void axpby(float scale, const float* src, float* dst, int64_t n, bool accumulate);
void fill(float* dst, int64_t n, float value);
double sum_squares(const float* x, int64_t n);
// The sum over several tensors (xs[i] holds ns[i] floats) with a single sync.
double sum_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& ns);
void copy(const float* src, float* dst, int64_t n);

}  // namespace convnet::cuda

// The CUDA runtime of the backend: devices and their streams (lanes), the caching allocator,
// page-locked host memory, copies, CUDA graphs and each device's GEMM math mode. The ops
// (cuda_ops.h) run on it; it knows nothing of them. Compiled whenever nvcc is found
// (CONVNET_WITH_CUDA).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "convnet/device.h"

typedef struct CUstream_st* cudaStream_t;

namespace convnet::cuda {

// ---- devices, streams, memory (context.cpp, memory.cpp) ----

// Devices visible to the runtime; 0 (never an exception) when there is no driver or no GPU.
int device_count();
// Throws RuntimeError naming the device when it does not exist.
void check_device(int device);
// Makes `device` current for this thread (cheap when it already is).
void set_device(int device);
// A device's streams are its lanes: a net whose logical devices share one GPU (cuda:0,cuda:0)
// runs each on a lane of its own, from a host thread of its own. A host thread works on one lane
// (set_lane; 0 unless set), and everything it queues goes there: its kernels, copies and GEMMs
// (a cuBLAS handle per lane), and the allocator's cache serves it the blocks freed on that lane.
void set_lane(int lane);
int lane();
// Lane `lane` of `device`, created on first use. Work on one lane runs in order.
cudaStream_t stream(int device, int lane);
// This thread's lane of `device`.
cudaStream_t stream(int device);
// This thread's lane of the current device.
cudaStream_t current_stream();
// Waits for the work queued so far on every lane of `device`.
void synchronize(int device);
// Waits for the work queued so far on this thread's lane of `device`.
void synchronize_lane(int device);

// Lets `device` read and write `peer`'s memory directly (NVLink or PCIe peer to peer), so that
// copies between them need no staging through host memory (the driver's way otherwise).
// Returns whether the pair allows it; enabling twice is harmless.
bool enable_peer_access(int device, int peer);

// A point in one lane of a device (cudaEvent_t, no timing): record() marks the work queued on
// it so far; make_wait(device, lane) has another lane (of this or another device) wait for it,
// with no host wait. How work on two lanes is ordered without a synchronisation.
class StreamEvent {
 public:
  explicit StreamEvent(int device, int lane = 0);
  ~StreamEvent();
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;
  void record();
  bool recorded() const { return recorded_; }
  void make_wait(int device, int lane = 0) const;  // nothing when never recorded
  int device() const { return device_; }

 private:
  int device_, lane_;
  void* event_ = nullptr;  // cudaEvent_t
  bool recorded_ = false;
};


// NCCL across MPI ranks (nccl.cpp; only in builds with CONVNET_WITH_NCCL). nccl_init is
// collective: every rank calls it with rank 0's id, for the same device order.
struct NcclId {
  char bytes[128];  // NCCL_UNIQUE_ID_BYTES
};
NcclId nccl_unique_id();
bool nccl_ready(int device);
void nccl_init(const NcclId& id, int rank, int size, int device);
// Sums `count` floats over the ranks in place, queued on this thread's lane of the device.
void nccl_all_reduce_sum(float* data, size_t count, int device);

// The caching allocator: freed blocks are kept per device, lane and size class and reused, so
// the steady-state training step makes no cudaMalloc. release() never synchronises: a block goes
// back to the releasing thread's lane and is reused only there, in stream order. (A thread that
// releases a block another lane used last must have ordered that use first: Net joins its lanes
// into lane 0 after every pass.)
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

// Any direction among host and CUDA devices, queued on this thread's lane. Host<->device copies
// are synchronous with respect to the host (one from a device first waits for all its lanes);
// device<->device copies are ordered on the lane. Between two GPUs the copy waits for the
// source's pending kernels and is done on return, unless `queued`: then it is only queued on
// this thread's lane of the destination, with no host wait, and the
// caller orders it (StreamEvent) after the work that wrote the source and before the work that
// next writes either side.
void copy(void* dst, const Device& dst_device, const void* src, const Device& src_device,
          size_t bytes, bool queued = false);
// A block of rows (storage.h copy_rows), ordered as copy() orders it.
void copy_rows(void* dst, const Device& dst_device, size_t dst_pitch, const void* src,
               const Device& src_device, size_t src_pitch, size_t width, size_t rows, bool queued = false);

// ---- CUDA graphs (graph.cpp) ----

// A stretch of work on one lane of a device (this thread's), captured once and replayed with one launch:
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
  // Queues one replay on the lane it was captured on.
  void launch();
  size_t nodes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- GEMM math (blas.cpp) ----

// fp32: strict IEEE single precision; tf32: cuBLAS may use TF32 tensor cores (10-bit mantissa
// inputs, fp32 accumulation).
enum class MathMode { Fp32, Tf32 };
void set_math_mode(int device, MathMode mode);
MathMode math_mode(int device);
// Destroys every lane's cuBLAS handle of `device` and gives back their workspaces; the next GEMM
// makes them again. For the end of a program (so that a leak check sees only what is held), not
// while another thread may be running a GEMM.
void destroy_blas_handles(int device);

}  // namespace convnet::cuda

// Where a tensor lives. A model definition names logical devices (cuda-convnet's `gpu=`);
// a Net maps each to one of these physical devices when it is built.
#pragma once
#include <cstddef>
#include <string>

namespace convnet {

struct Device {
  enum class Kind { CPU, CUDA };
  Kind kind = Kind::CPU;
  // CPU devices may carry an index too: two "CPU devices" behave like two cards (separate
  // buffers, explicit copies between them), which lets the CPU test the multi-device paths.
  int index = 0;

  static Device cpu(int index = 0) { return {Kind::CPU, index}; }
  static Device cuda(int index = 0) { return {Kind::CUDA, index}; }
  // "cpu", "cpu:1", "cuda", "cuda:0", "gpu:1". Throws ValueError on anything else.
  static Device parse(const std::string& text);

  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  std::string str() const;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// True when this build has the CUDA backend compiled in.
bool cuda_compiled();
// Number of CUDA devices visible at run time (0 without a GPU or without the CUDA backend).
int cuda_device_count();
// Throws RuntimeError when `device` cannot be used here (no CUDA backend, no such GPU).
void require_available(const Device& device);

// How cuBLAS may compute a net's GEMMs on a GPU: strict fp32, or TF32 tensor cores (inputs
// rounded to a 10-bit mantissa, fp32 accumulation). The CPU always computes in fp32.
enum class MathMode { Fp32, Tf32 };
std::string math_mode_name(MathMode mode);       // "fp32", "tf32"
MathMode parse_math_mode(const std::string& name);  // throws ValueError on anything else

// The caching allocator's view of one GPU (all zero without the CUDA backend).
struct CudaMemoryStats {
  size_t current_bytes = 0;      // held by live tensors
  size_t peak_bytes = 0;         // most ever held at once, since start or the last reset
  size_t cached_bytes = 0;       // freed and kept for reuse
  size_t cuda_malloc_calls = 0;  // a steady-state training step adds none
};
CudaMemoryStats cuda_memory_stats(int device);
void cuda_reset_peak(int device);
// The host memory of convnet's tensors (pageable and page-locked; not memory borrowed from
// numpy or DLPack): what the CPU's counterpart of CudaMemoryStats can say.
struct HostMemoryStats {
  size_t current_bytes = 0;  // held by live tensors
  size_t peak_bytes = 0;     // most ever held at once, since start or the last reset
  size_t allocations = 0;    // tensors allocated so far
};
HostMemoryStats host_memory_stats();
void host_reset_peak();
// Waits until every kernel queued on the device has finished (for timing from the host).
void cuda_synchronize(int device);

}  // namespace convnet

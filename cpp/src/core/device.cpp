// Device names and discovery.
#include "convnet/device.h"

#include <cstdlib>

#include "convnet/error.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace convnet {

Device Device::parse(const std::string& text) {
  auto colon = text.find(':');
  std::string kind = text.substr(0, colon);
  int index = 0;
  if (colon != std::string::npos) {
    const std::string num = text.substr(colon + 1);
    char* end = nullptr;
    long v = std::strtol(num.c_str(), &end, 10);
    if (num.empty() || *end != '\0' || v < 0 || v > 1024)
      throw ValueError("bad device '" + text + "': expected cpu, cpu:K, cuda or cuda:K");
    index = static_cast<int>(v);
  }
  if (kind == "cpu") return cpu(index);
  if (kind == "cuda" || kind == "gpu") return cuda(index);
  throw ValueError("bad device '" + text + "': expected cpu, cpu:K, cuda or cuda:K");
}

std::string Device::str() const {
  return std::string(is_cpu() ? "cpu" : "cuda") + ":" + std::to_string(index);
}

bool cuda_compiled() {
#ifdef CONVNET_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef CONVNET_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

void require_available(const Device& device) {
  if (device.is_cpu()) return;
  if (!cuda_compiled())
    throw RuntimeError(device.str() + " requested, but this build has no CUDA backend (nvcc was not found when it was built)");
  const int n = cuda_device_count();
  if (device.index >= n)
    throw RuntimeError(detail::concat(device.str(), " requested, but ", n, " CUDA device(s) are visible"));
}

std::string math_mode_name(MathMode mode) { return mode == MathMode::Tf32 ? "tf32" : "fp32"; }

MathMode parse_math_mode(const std::string& name) {
  if (name == "fp32") return MathMode::Fp32;
  if (name == "tf32") return MathMode::Tf32;
  throw ValueError("unknown math mode '" + name + "' (expected fp32 or tf32)");
}

namespace {
void non_negative(const char* what, int device) {
  if (device < 0) throw ValueError(detail::concat(what, ": device index ", device, " is negative"));
}
}  // namespace

CudaMemoryStats cuda_memory_stats(int device) {
  non_negative("cuda_memory_stats", device);
  CudaMemoryStats out;
#ifdef CONVNET_WITH_CUDA
  if (device < cuda_device_count()) {
    cuda::MemoryStats s = cuda::memory_stats(device);
    out = {s.current_bytes, s.peak_bytes, s.cached_bytes, s.cuda_malloc_calls};
  }
#endif
  (void)device;
  return out;
}

void cuda_reset_peak(int device) {
  non_negative("cuda_reset_peak", device);
#ifdef CONVNET_WITH_CUDA
  if (device < cuda_device_count()) cuda::reset_peak(device);
#endif
  (void)device;
}

void cuda_synchronize(int device) {
  non_negative("cuda_synchronize", device);
#ifdef CONVNET_WITH_CUDA
  if (device < cuda_device_count()) cuda::synchronize(device);
#endif
  (void)device;
}

}  // namespace convnet

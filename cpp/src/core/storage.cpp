// Allocation and cross-device copies, routed by device kind.
#include "core/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "convnet/error.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace convnet {

#ifndef CONVNET_WITH_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw RuntimeError(std::string(what) +
                     ": this build of convnet has no CUDA backend (nvcc was not found when it was built)");
}
}  // namespace
#endif

namespace {
// Host tensors' bytes (host_memory_stats): updated on every allocation and release.
std::atomic<size_t> host_current{0}, host_peak{0}, host_allocations{0};

size_t allocated_bytes(size_t floats) { return ((floats * sizeof(float) + 63) / 64) * 64; }

void count_host_allocation(size_t bytes) {
  const size_t now = host_current.fetch_add(bytes) + bytes;
  host_allocations.fetch_add(1);
  size_t peak = host_peak.load();
  while (now > peak && !host_peak.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace

HostMemoryStats host_memory_stats() { return {host_current.load(), host_peak.load(), host_allocations.load()}; }
void host_reset_peak() { host_peak.store(host_current.load()); }

Storage::Storage(size_t floats, Device device, bool pinned)
    : floats_(floats), device_(device), pinned_(pinned) {
  CONVNET_CHECK(!pinned || device.is_cpu(), "page-locked memory is host memory, not ", device.str());
  const size_t bytes = allocated_bytes(floats);
  if (bytes == 0) return;
  if (pinned) {
#ifdef CONVNET_WITH_CUDA
    data_ = static_cast<float*>(cuda::allocate_pinned(bytes));
#else
    no_cuda("allocating page-locked host memory");
#endif
  } else if (device.is_cpu()) {
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!data_)
      throw RuntimeError(detail::concat("out of host memory allocating ", bytes, " bytes"));
  } else {
#ifdef CONVNET_WITH_CUDA
    data_ = static_cast<float*>(cuda::allocate(bytes, device.index));
#else
    no_cuda("allocating a tensor on a CUDA device");
#endif
  }
  if (device.is_cpu()) count_host_allocation(bytes);
}

size_t Storage::bytes() const { return allocated_bytes(floats_); }

Storage::Storage(float* borrowed, size_t floats, Device device, std::function<void()> release)
    : data_(borrowed), floats_(floats), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_();
    return;
  }
  if (!data_) return;
  if (device_.is_cpu()) host_current.fetch_sub(allocated_bytes(floats_));
  if (pinned_) {
#ifdef CONVNET_WITH_CUDA
    cuda::release_pinned(data_);
#endif
  } else if (device_.is_cpu()) {
    std::free(data_);
  } else {
#ifdef CONVNET_WITH_CUDA
    cuda::release(data_, device_.index);
#endif
  }
}

PinnedBuffer::~PinnedBuffer() {
#ifdef CONVNET_WITH_CUDA
  cuda::release_pinned(data_);
#else
  std::free(data_);
#endif
}

void* PinnedBuffer::get(size_t bytes) {
  if (bytes <= bytes_) return data_;
#ifdef CONVNET_WITH_CUDA
  cuda::release_pinned(data_);
  data_ = nullptr;  // allocate_pinned may throw: the destructor must not free the old block
  bytes_ = 0;
  data_ = cuda::allocate_pinned(bytes);
#else
  std::free(data_);
  bytes_ = 0;
  data_ = std::malloc(bytes);
  if (!data_) throw RuntimeError(detail::concat("out of host memory allocating ", bytes, " bytes"));
#endif
  bytes_ = bytes;
  return data_;
}

void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes, bool queued) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef CONVNET_WITH_CUDA
  cuda::copy(dst, dst_device, src, src_device, bytes, queued);
#else
  no_cuda("copying to or from a CUDA device");
#endif
}

void copy_rows(void* dst, const Device& dst_device, size_t dst_pitch, const void* src,
               const Device& src_device, size_t src_pitch, size_t width, size_t rows, bool queued) {
  if (width == 0 || rows == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
    return;
  }
#ifdef CONVNET_WITH_CUDA
  cuda::copy_rows(dst, dst_device, dst_pitch, src, src_device, src_pitch, width, rows, queued);
#else
  no_cuda("copying to or from a CUDA device");
#endif
}

}  // namespace convnet

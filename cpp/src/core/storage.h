// Device memory behind Tensors, and byte copies between any two devices. Internal to the core.
#pragma once
#include <cstddef>
#include <functional>

#include "convnet/device.h"

namespace convnet {

class Storage {
 public:
  // `pinned`: host memory that is page-locked (cudaHostAlloc), so a GPU copies it by DMA.
  Storage(size_t floats, Device device, bool pinned = false);
  // Memory convnet does not own (a DLPack producer's): `release` is called instead of freeing.
  Storage(float* borrowed, size_t floats, Device device, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() const { return data_; }
  size_t size() const { return floats_; }
  size_t bytes() const;  // as allocated: rounded up to whole 64-byte lines
  const Device& device() const { return device_; }
  bool pinned() const { return pinned_; }

 private:
  float* data_ = nullptr;
  size_t floats_ = 0;
  Device device_;
  bool pinned_ = false;
  std::function<void()> release_;  // borrowed memory's
};

// Page-locked host memory for uploading batches to a GPU (plain host memory in a CPU-only build).
// Grows on demand and is reused.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* get(size_t bytes);

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Copies `rows` rows of `width` bytes, each starting `src_pitch` bytes after the last in src and
// `dst_pitch` bytes in dst, between any two devices (a block of columns of a matrix).
void copy_rows(void* dst, const Device& dst_device, size_t dst_pitch, const void* src,
               const Device& src_device, size_t src_pitch, size_t width, size_t rows, bool queued = false);
// Copies `bytes` from src on src_device to dst on dst_device (host, CUDA, or across them).
// `queued`: between two GPUs, only queued on dst's stream (Tensor::copy_from).
void copy_bytes(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                size_t bytes, bool queued = false);

}  // namespace convnet

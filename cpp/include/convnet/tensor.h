// A float32 tensor on one device. Activations are 4-D in CHWN order (batch innermost, as
// cuda-convnet): shape {C, H, W, N}; a fully connected layer's output is {C, 1, 1, N}.
// Parameters have whatever shape their layer gives them. Tensors share storage when copied
// (like a shared_ptr); `channels(c0, n)` of an activation is a contiguous view.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "convnet/device.h"

namespace convnet {

using Shape = std::vector<int>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage;  // device memory, freed through its device's backend

class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, Device device);  // uninitialised memory

  static Tensor zeros(Shape shape, Device device);
  // A host tensor in page-locked memory: a GPU reads it by DMA, with no staging copy (what the
  // data pipeline fills for a net on a GPU). Needs the CUDA backend and a GPU.
  static Tensor pinned(Shape shape);
  // A tensor over memory convnet does not own (DLPack): `release` is called once the last
  // tensor sharing it is gone. The memory must stay valid until then.
  static Tensor borrow(float* data, Shape shape, Device device, std::function<void()> release);

  const Shape& shape() const { return shape_; }
  int dim(int i) const { return shape_.at(static_cast<size_t>(i)); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  const Device& device() const { return device_; }
  bool defined() const { return storage_ != nullptr; }
  bool is_pinned() const;  // host memory that is page-locked (Tensor::pinned)

  float* data();
  const float* data() const;
  // The memory behind this tensor, shared by its views: an identity (for counting shared memory
  // once) and its size in bytes as allocated (0 for an undefined tensor).
  const void* storage_id() const { return storage_.get(); }
  int64_t storage_bytes() const;

  // A contiguous view of channels [c0, c0 + count) of a CHWN activation.
  Tensor channels(int c0, int count) const;
  // Same storage, new shape with the same element count.
  Tensor reshaped(Shape shape) const;
  // Elements [offset, offset + numel(shape)) of this tensor, in `shape`, sharing its storage
  // (parameter gradients are such views of their gradient bucket).
  Tensor view(int64_t offset, Shape shape) const;

  // Host <-> tensor copies (the tensor may be on any device).
  void copy_from_host(const float* src);
  void copy_to_host(float* dst) const;
  std::vector<float> to_vector() const;
  // Copy from a tensor of the same element count, on any device. `queued`: between two GPUs,
  // the copy is only queued on this tensor's GPU's stream, with no host wait, and the caller
  // orders it with events (cuda runtime's StreamEvent); otherwise it is done on return, or
  // ordered on the one GPU's stream.
  void copy_from(const Tensor& src, bool queued = false);
  // Examples [src_first, src_first + count) of `src` (the last dimension is the batch) into
  // examples [first, first + count) of this tensor, on any two devices; both have the same
  // elements per example. How data-parallel replicas take their part of a batch and give back
  // theirs. `queued` as for copy_from.
  void copy_examples(int64_t first, const Tensor& src, int64_t src_first, int64_t count, bool queued = false);
  void fill(float value);

 private:
  Shape shape_;
  Device device_;
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in floats
};

}  // namespace convnet

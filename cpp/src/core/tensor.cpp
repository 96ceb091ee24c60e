// Tensor: a shaped view into device Storage.
#include "convnet/tensor.h"

#include "convnet/error.h"
#include "core/storage.h"
#include "cpu/cpu_ops.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace convnet {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int d : s) n *= d;
  return n;
}

namespace {
void check_shape(const Shape& shape) {
  for (int d : shape)
    CONVNET_CHECK(d >= 0, "tensor shape ", shape_str(shape), " has a negative dimension");
}
}  // namespace

Tensor::Tensor(Shape shape, Device device) : shape_(std::move(shape)), device_(device) {
  check_shape(shape_);
  storage_ = std::make_shared<Storage>(static_cast<size_t>(numel()), device_);
}

Tensor Tensor::borrow(float* data, Shape shape, Device device, std::function<void()> release) {
  Tensor t;
  t.shape_ = std::move(shape);
  check_shape(t.shape_);
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(data, static_cast<size_t>(t.numel()), device, std::move(release));
  return t;
}

Tensor Tensor::pinned(Shape shape) {
  Tensor t;
  t.shape_ = std::move(shape);
  check_shape(t.shape_);
  t.device_ = Device::cpu();
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(t.numel()), t.device_, true);
  return t;
}

bool Tensor::is_pinned() const { return storage_ && storage_->pinned(); }

Tensor Tensor::zeros(Shape shape, Device device) {
  Tensor t(std::move(shape), device);
  t.fill(0.f);
  return t;
}

float* Tensor::data() { return storage_ ? storage_->data() + offset_ : nullptr; }
int64_t Tensor::storage_bytes() const { return storage_ ? int64_t(storage_->bytes()) : 0; }
const float* Tensor::data() const { return storage_ ? storage_->data() + offset_ : nullptr; }

Tensor Tensor::channels(int c0, int count) const {
  CONVNET_CHECK(ndim() == 4, "channels(): tensor ", shape_str(shape_), " is not a CHWN activation");
  CONVNET_CHECK(c0 >= 0 && count >= 0 && c0 + count <= shape_[0], "channels(", c0, ", ", count,
                "): out of range for ", shape_[0], " channels");
  Tensor v = *this;
  v.shape_[0] = count;
  v.offset_ = offset_ + int64_t(c0) * shape_[1] * shape_[2] * shape_[3];
  return v;
}

Tensor Tensor::reshaped(Shape shape) const {
  CONVNET_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ",
                shape_str(shape));
  Tensor v = *this;
  v.shape_ = std::move(shape);
  return v;
}

Tensor Tensor::view(int64_t offset, Shape shape) const {
  CONVNET_CHECK(defined(), "view(): undefined tensor");
  CONVNET_CHECK(offset >= 0 && offset + shape_numel(shape) <= numel(), "view(", offset, ", ",
                shape_str(shape), "): out of range for a tensor of ", numel(), " elements");
  Tensor v = *this;
  v.shape_ = std::move(shape);
  v.offset_ = offset_ + offset;
  return v;
}

void Tensor::copy_from_host(const float* src) {
  copy_bytes(data(), device_, src, Device::cpu(), sizeof(float) * size_t(numel()));
}

void Tensor::copy_to_host(float* dst) const {
  copy_bytes(dst, Device::cpu(), data(), device_, sizeof(float) * size_t(numel()));
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  copy_to_host(v.data());
  return v;
}

void Tensor::copy_from(const Tensor& src, bool queued) {
  CONVNET_CHECK(src.numel() == numel(), "copy_from: ", shape_str(src.shape_), " into ",
                shape_str(shape_), " (element counts differ)");
  copy_bytes(data(), device_, src.data(), src.device_, sizeof(float) * size_t(numel()), queued);
}

void Tensor::copy_examples(int64_t first, const Tensor& src, int64_t src_first, int64_t count, bool queued) {
  CONVNET_CHECK(ndim() > 0 && src.ndim() > 0, "copy_examples: an undefined or empty tensor");
  const int64_t n = shape_.back(), src_n = src.shape_.back();
  CONVNET_CHECK(numel() / n == src.numel() / src_n, "copy_examples: ", shape_str(src.shape_), " into ",
                shape_str(shape_), " (elements per example differ)");
  CONVNET_CHECK(count >= 0 && first >= 0 && src_first >= 0 && first + count <= n && src_first + count <= src_n,
                "copy_examples: examples [", src_first, ", ", src_first + count, ") of ", shape_str(src.shape_),
                " into [", first, ", ", first + count, ") of ", shape_str(shape_));
  const size_t row = sizeof(float);
  copy_rows(data() + first, device_, size_t(n) * row, src.data() + src_first, src.device_, size_t(src_n) * row,
            size_t(count) * row, size_t(numel() / n), queued);
}

void Tensor::fill(float value) {
  if (device_.is_cpu()) {
    cpu::fill(data(), numel(), value);
  } else {
#ifdef CONVNET_WITH_CUDA
    cuda::set_device(device_.index);
    cuda::fill(data(), numel(), value);
#else
    throw RuntimeError("Tensor::fill: a tensor on " + device_.str() + " in a build without CUDA");
#endif
  }
}

}  // namespace convnet

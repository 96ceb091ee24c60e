// A data source over images handed in as arrays (from Python or any caller): N x C x H x W
// floats and N labels, copied in so the caller's buffers may go away.
#include <cstring>
#include <string>
#include <vector>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"
#include "convnet/error.h"

namespace convnet {
namespace {

class ArraySource final : public DataSource {
 public:
  ArraySource(const float* nchw, const int* labels, int64_t count, int channels, int height,
              int width, int classes)
      : count_(count), channels_(channels), height_(height), width_(width), classes_(classes) {
    CONVNET_CHECK(count >= 0, "array_source: count ", count, " is negative");
    CONVNET_CHECK(channels >= 1 && height >= 1 && width >= 1, "array_source: image shape ",
                  channels, " x ", height, " x ", width, " has a dimension below 1");
    CONVNET_CHECK(classes >= 1, "array_source: classes ", classes, " must be at least 1");
    CONVNET_CHECK(count == 0 || (nchw && labels), "array_source: null images or labels for ",
                  count, " examples");
    // Checked here rather than trusted: a bad label would otherwise surface as a wrong cost or
    // an out-of-range write deep inside training.
    for (int64_t i = 0; i < count; ++i)
      CONVNET_CHECK(labels[i] >= 0 && labels[i] < classes, "array_source: label ", labels[i],
                    " of example ", i, " is outside [0, ", classes, ")");
    example_ = size_t(channels) * size_t(height) * size_t(width);
    images_.assign(nchw, nchw + size_t(count) * example_);
    labels_.assign(labels, labels + count);
  }

  int64_t size() const override { return count_; }
  int channels() const override { return channels_; }
  int height() const override { return height_; }
  int width() const override { return width_; }
  int classes() const override { return classes_; }

  int load(int64_t index, float* chw) const override {
    CONVNET_CHECK(index >= 0 && index < count_, "array_source: index ", index,
                  " out of range [0, ", count_, ")");
    std::memcpy(chw, images_.data() + size_t(index) * example_, example_ * sizeof(float));
    return labels_[size_t(index)];
  }

  std::string describe(int64_t index) const override {
    return detail::concat("array example ", index);
  }

 private:
  int64_t count_;
  int channels_, height_, width_, classes_;
  size_t example_ = 0;  // floats per example
  std::vector<float> images_;
  std::vector<int> labels_;
};

}  // namespace

std::shared_ptr<DataSource> array_source(const float* nchw, const int* labels, int64_t count,
                                         int channels, int height, int width, int classes) {
  return std::make_shared<ArraySource>(nchw, labels, count, channels, height, width, classes);
}

}  // namespace convnet

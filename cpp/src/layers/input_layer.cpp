// Input layers: "input" holds a batch of images {C, H, W, N}; "labels" holds class indices
// {1, 1, 1, N}. Both are filled from outside (Net::set_input) and need no gradient.
#include "convnet/error.h"
#include "layers/factories.h"

namespace convnet {

namespace {

class InputLayer : public Layer {
 public:
  InputLayer(const LayerSpec& spec, bool labels) : Layer(spec), labels_(labels) {
    const LayerOptions& o = spec.options;
    if (labels_) {
      channels_ = height_ = width_ = 1;
    } else {
      channels_ = o.get_int("channels");
      const int size = o.get_int("size", 0);
      height_ = o.get_int("height", size);
      width_ = o.get_int("width", size);
      CONVNET_CHECK(channels_ > 0 && height_ > 0 && width_ > 0, where(),
                    ": needs channels > 0 and a positive size (or height and width)");
    }
  }
  std::pair<int, int> input_count() const override { return {0, 0}; }
  bool is_input() const override { return true; }

  // The batch size comes from the data, through Net::set_input; setup receives it as the only
  // "input" shape {N}.
  Shape setup(const std::vector<Shape>& batch) override {
    return {channels_, height_, width_, batch.at(0).at(0)};
  }
  void forward(const std::vector<Tensor>&, Tensor&, const PassContext&) override {}
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor&, std::vector<Tensor>&,
                const std::vector<bool>&, const PassContext&) override {}

 private:
  bool labels_;
  int channels_ = 1, height_ = 1, width_ = 1;
};

}  // namespace

std::unique_ptr<Layer> make_input_layer(const LayerSpec& s) { return std::make_unique<InputLayer>(s, false); }
std::unique_ptr<Layer> make_labels_layer(const LayerSpec& s) { return std::make_unique<InputLayer>(s, true); }

}  // namespace convnet

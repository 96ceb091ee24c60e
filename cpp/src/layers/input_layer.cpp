// Input layers: "input" holds a batch of images {C, H, W, N}; "labels" holds class indices
// {1, 1, 1, N}. Both are filled from outside (Net::set_input) and need no gradient.
#include "convnet/error.h"
#include "convnet/layer.h"

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
      const int size = o.has("size") ? o.get_int("size") : 0;
      height_ = o.has("height") ? o.get_int("height") : size;
      width_ = o.has("width") ? o.get_int("width") : size;
      CONVNET_CHECK(channels_ > 0 && height_ > 0 && width_ > 0, where(),
                    ": needs channels > 0 and a positive size (or height and width)");
    }
  }

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

class ImagesLayer : public InputLayer {
 public:
  explicit ImagesLayer(const LayerSpec& spec) : InputLayer(spec, false) {}
};

class LabelsLayer : public InputLayer {
 public:
  explicit LabelsLayer(const LayerSpec& spec) : InputLayer(spec, true) {}
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("input", "a batch of images {C, H, W, N}, set from outside")
        .role(LayerRole::Input)
        .inputs(0, 0)
        .required("channels", OptionDecl::Kind::Int, "image channels")
        .optional("size", OptionDecl::Kind::Int, "height and width of square images")
        .optional("height", OptionDecl::Kind::Int, "image height (default: size)")
        .optional("width", OptionDecl::Kind::Int, "image width (default: size)")
        .make<ImagesLayer>());
CONVNET_REGISTER_LAYER(
    LayerType("labels", "a batch of class indices {1, 1, 1, N}, set from outside")
        .role(LayerRole::Labels)
        .inputs(0, 0)
        .make<LabelsLayer>());

}  // namespace convnet

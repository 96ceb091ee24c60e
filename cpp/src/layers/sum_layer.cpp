// Elementwise weighted sum of inputs of one shape: out = sum_i coeffs[i] * in[i].
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class SumLayer : public Layer {
 public:
  explicit SumLayer(const LayerSpec& spec) : Layer(spec) {
    if (spec.options.has("coeffs"))
      for (double c : spec.options.get_floats("coeffs")) coeffs_.push_back(float(c));
  }
  Shape setup(const std::vector<Shape>& in) override {
    if (coeffs_.empty()) coeffs_.assign(in.size(), 1.f);
    CONVNET_CHECK(coeffs_.size() == in.size(), where(), ": ", coeffs_.size(), " coeffs for ",
                  in.size(), " inputs");
    for (size_t i = 1; i < in.size(); ++i)
      CONVNET_CHECK(in[i] == in[0], where(), ": input '", inputs()[i], "' has shape ",
                    shape_str(in[i]), " but '", inputs()[0], "' has ", shape_str(in[0]));
    return in[0];
  }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    for (size_t i = 0; i < in.size(); ++i) axpby(coeffs_[i], in[i], out, i > 0);
  }
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    for (size_t i = 0; i < din.size(); ++i)
      if (din[i].defined()) axpby(coeffs_[i], dout, din[i], accumulate[i]);
  }

 private:
  std::vector<float> coeffs_;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("sum", "elementwise weighted sum of inputs of one shape")
        .inputs(1, -1)
        .optional("coeffs", OptionDecl::Kind::Floats, "one weight per input (default: all 1)")
        .make<SumLayer>());

}  // namespace convnet

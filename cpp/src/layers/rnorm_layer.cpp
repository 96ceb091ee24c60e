// Same-map response normalisation, cuda-convnet2's `rnorm` (ResponseNormLayer): each value
// divided by (k + alpha * sum of squares over a size x size spatial window of its own
// channel)^beta; the window win(p) = [p - size/2, p - size/2 + size - 1] in each direction,
// clipped at the image's edges (ops.h RnormParams). `alpha` multiplies the sum as given:
// cuda-convnet2's cfg `scale` is divided by size^2 before it gets here (by the importer).
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class RnormLayer : public Layer {
 public:
  explicit RnormLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    p_.size = o.get_int("size");
    p_.k = float(o.get_float("k"));
    p_.alpha = float(o.get_float("alpha"));
    p_.beta = float(o.get_float("beta"));
    CONVNET_CHECK(p_.size >= 1, where(), ": size must be >= 1, got ", p_.size);
    CONVNET_CHECK(p_.k > 0 && p_.alpha >= 0, where(), ": need k > 0 and alpha >= 0 (got k=", p_.k,
                  " alpha=", p_.alpha, ")");
  }

  Shape setup(const std::vector<Shape>& in) override {
    // A window larger than the image is allowed: it is clipped like any window at an edge.
    denom_ = Tensor();
    return in[0];
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    if (!denom_.defined() || denom_.shape() != in[0].shape()) denom_ = Tensor(in[0].shape(), device_);
    rnorm_forward(in[0], out, denom_, p_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (din[0].defined()) rnorm_backward(in[0], out, denom_, dout, din[0], p_, accumulate[0]);
  }

 private:
  RnormParams p_;
  Tensor denom_;  // k + alpha * window sum, kept from forward for backward

 public:
  NamedTensors buffers() const override { return {{"denominators", denom_}}; }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("rnorm", "cuda-convnet2's same-map response normalisation: x / (k + alpha * sum of "
              "x^2 over a size x size window of the same channel)^beta")
        .option("size", 5, "window side (positions in each direction; clipped at the edges)")
        .option("k", 1.0, "additive constant (cuda-convnet2's minDiv)")
        .required("alpha", OptionDecl::Kind::Float,
                  "coefficient of the window's sum (cuda-convnet2's scale / size^2)")
        .option("beta", 0.75, "exponent (cuda-convnet2's pow)")
        .make<RnormLayer>());

}  // namespace convnet

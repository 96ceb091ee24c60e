// Local response normalisation across channels, with the AlexNet paper's constants by default
// (size 5, k 2, alpha 1e-4, beta 0.75; alpha as the paper writes it, not divided by size).
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class LrnLayer : public Layer {
 public:
  explicit LrnLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    p_.size = o.get_int("size");
    p_.k = float(o.get_float("k"));
    p_.alpha = float(o.get_float("alpha"));
    p_.beta = float(o.get_float("beta"));
    CONVNET_CHECK(p_.size >= 1, where(), ": size must be >= 1");
    CONVNET_CHECK(p_.k > 0 && p_.alpha >= 0, where(), ": need k > 0 and alpha >= 0");
  }

  Shape setup(const std::vector<Shape>& in) override {
    denom_ = Tensor();
    dy_ = Tensor();
    return in[0];
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    if (!denom_.defined()) denom_ = Tensor(in[0].shape(), device_);
    lrn_forward(in[0], out, denom_, p_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (din[0].defined()) lrn_backward(in[0], out, denom_, dout, din[0], p_, accumulate[0]);
  }

  bool goes_back_through_pool() const override { return true; }
  void backward_through_pool(const std::vector<Tensor>& in, const Tensor& out, const Tensor& pooled,
                             const Tensor& dpooled, const PoolGeometry& pool,
                             std::vector<Tensor>& din, const std::vector<bool>& accumulate) override {
    if (!din[0].defined()) return;
    // The CPU composes the two passes through dy_; a GPU needs no such buffer.
    if (device_.is_cpu() && !dy_.defined()) dy_ = Tensor(out.shape(), device_);
    lrn_pool_backward(in[0], out, denom_, pooled, dpooled, din[0], p_, pool, accumulate[0], dy_);
  }

 private:
  LrnParams p_;
  Tensor denom_;
  Tensor dy_;  // the gradient of the output, when going back through a pool on the CPU

 public:
  NamedTensors buffers() const override { return {{"denominators", denom_}, {"output gradient", dy_}}; }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("lrn", "AlexNet's normalisation across channels: x / (k + alpha * sum x^2)^beta")
        .option("size", 5, "channels in the window")
        .option("k", 2.0, "additive constant")
        .option("alpha", 1e-4, "the paper's alpha (not divided by size)")
        .option("beta", 0.75, "exponent")
        .make<LrnLayer>());

}  // namespace convnet

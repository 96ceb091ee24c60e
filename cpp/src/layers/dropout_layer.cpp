// Dropout. Inverted (the default, cuda-convnet2's `dropout`): in training each unit is kept with
// probability 1 - rate and scaled by 1 / (1 - rate), so at test time the layer is the identity.
// Not inverted (the AlexNet paper's rule, cuda-convnet2's `dropout2`): kept units pass unscaled in
// training and every output is multiplied by 1 - rate at test time; the expected activations are
// the same either way. A layer with enable=false always acts as at test time (cuda-convnet2's
// enable=0). Masks come from Philox keyed by the net's seed, this layer's name and the training
// step, so backward regenerates them.
#include <functional>

#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class DropoutLayer : public Layer {
 public:
  explicit DropoutLayer(const LayerSpec& spec) : Layer(spec) {
    rate_ = float(spec.options.get_float("rate"));
    inverted_ = spec.options.get_bool("inverted");
    enabled_ = spec.options.get_bool("enable");
    CONVNET_CHECK(rate_ >= 0.f && rate_ < 1.f, where(), ": rate must be in [0, 1), got ", rate_);
    for (unsigned char c : spec.name) salt_ = (salt_ ^ c) * 1099511628211ull;  // FNV-1a: stable everywhere
  }
  Shape setup(const std::vector<Shape>& in) override {
    scratch_ = Tensor();
    return in[0];
  }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext& ctx) override {
    apply(in[0], out, false, ctx);
  }
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    if (din[0].defined()) apply(dout, din[0], accumulate[0], ctx);  // the same mask and scale
  }

 private:
  // out (+)= in * mask * scale: the forward pass, and the backward one on gradients.
  void apply(const Tensor& in, Tensor& out, bool accumulate, const PassContext& ctx) {
    const bool drop = ctx.train && enabled_;
    if (inverted_) {
      dropout_apply(in, out, drop ? rate_ : 0.f, ctx.seed ^ salt_, ctx.step, accumulate, ctx.shard);
    } else if (!drop) {
      axpby(1.f - rate_, in, out, accumulate);
    } else {
      // dropout_apply scales kept units by 1 / (1 - rate); this variant keeps them unscaled.
      if (accumulate && (!scratch_.defined() || scratch_.shape() != in.shape()))
        scratch_ = Tensor(in.shape(), device_);
      Tensor& masked = accumulate ? scratch_ : out;
      dropout_apply(in, masked, rate_, ctx.seed ^ salt_, ctx.step, false, ctx.shard);
      axpby(1.f - rate_, masked, out, accumulate);
    }
  }

 private:
  float rate_ = 0.5f;
  bool inverted_ = true, enabled_ = true;
  Tensor scratch_;  // the masked gradient before it is added, for the non-inverted variant

 public:
  NamedTensors buffers() const override { return {{"masked gradient", scratch_}}; }
  uint64_t salt_ = 14695981039346656037ull;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("dropout", "dropout: inverted (kept units scaled by 1 / (1 - rate) in training) or the "
                         "paper's (outputs scaled by 1 - rate at test time)")
        .option("rate", 0.5, "probability of dropping a unit")
        .option("inverted", true, "scale kept units by 1 / (1 - rate) in training (cuda-convnet2's dropout); "
                "false: scale every output by 1 - rate at test time instead (the paper's rule, dropout2)")
        .option("enable", true, "false: the layer always acts as at test time (cuda-convnet2's enable=0)")
        .make<DropoutLayer>());

}  // namespace convnet

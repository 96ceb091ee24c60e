// Dropout, inverted: in training each unit is kept with probability 1 - rate and scaled by
// 1 / (1 - rate), so at test time the layer is the identity (the paper instead halves the
// outputs at test time; the expected activations are the same). Masks come from Philox keyed by
// the net's seed, this layer's name and the training step, so backward regenerates them.
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
    CONVNET_CHECK(rate_ >= 0.f && rate_ < 1.f, where(), ": rate must be in [0, 1), got ", rate_);
    for (unsigned char c : spec.name) salt_ = (salt_ ^ c) * 1099511628211ull;  // FNV-1a: stable everywhere
  }
  Shape setup(const std::vector<Shape>& in) override { return in[0]; }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext& ctx) override {
    dropout_apply(in[0], out, ctx.train ? rate_ : 0.f, ctx.seed ^ salt_, ctx.step, false, ctx.shard);
  }
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    if (din[0].defined())
      dropout_apply(dout, din[0], ctx.train ? rate_ : 0.f, ctx.seed ^ salt_, ctx.step, accumulate[0],
                    ctx.shard);
  }

 private:
  float rate_ = 0.5f;
  uint64_t salt_ = 14695981039346656037ull;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("dropout", "inverted dropout: kept units scaled by 1 / (1 - rate) in training")
        .option("rate", 0.5, "probability of dropping a unit")
        .make<DropoutLayer>());

}  // namespace convnet

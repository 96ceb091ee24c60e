// Max or average pooling over square windows, overlapping when stride < size (AlexNet: 3/2),
// with optional implicit padding.
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class PoolLayer : public Layer {
 public:
  explicit PoolLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    const std::string kind = o.get_string("pool");
    CONVNET_CHECK(kind == "max" || kind == "avg", where(), ": pool must be \"max\" or \"avg\", got \"",
                  kind, "\"");
    g_.type = kind == "max" ? PoolType::Max : PoolType::Avg;
    g_.size = o.get_int("size");
    g_.stride = o.has("stride") ? o.get_int("stride") : g_.size;
    g_.ceil_mode = o.get_bool("ceil");
    g_.padding = o.get_int("padding");
    // Only an average over padded windows has a divisor to choose.
    if (g_.type == PoolType::Avg && g_.padding > 0) g_.count_padding = o.get_bool("count_padding");
  }

  Shape setup(const std::vector<Shape>& in) override {
    g_.channels = in[0][0];
    g_.height = in[0][1];
    g_.width = in[0][2];
    g_.batch = in[0][3];
    g_.finish(where());
    return {g_.channels, g_.out_h, g_.out_w, g_.batch};
  }

  const PoolGeometry* pool_geometry() const override { return &g_; }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    pool_forward(in[0], out, g_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (din[0].defined()) pool_backward(in[0], out, dout, din[0], g_, accumulate[0]);
  }

 private:
  PoolGeometry g_;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("pool", "max or average pooling over square windows")
        .required("size", OptionDecl::Kind::Int, "window side")
        .optional("stride", OptionDecl::Kind::Int, "step between windows (default: size)")
        .option("pool", "max", "max or avg")
        .option("ceil", false, "round the output size up (cuda-convnet) rather than down")
        .option("padding", 0, "implicit cells on each side, at most size/2 (PyTorch's padding=): max "
                "pooling never picks them")
        .option("count_padding", true, "average pooling divides by the window's cells with the padded "
                "ones (PyTorch's count_include_pad=True) or, false, without them")
        .make<PoolLayer>());

}  // namespace convnet

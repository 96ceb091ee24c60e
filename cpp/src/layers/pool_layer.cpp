// Max or average pooling over square windows, overlapping when stride < size (AlexNet: 3/2).
#include "convnet/error.h"
#include "convnet/ops.h"
#include "layers/factories.h"

namespace convnet {

namespace {

class PoolLayer : public Layer {
 public:
  explicit PoolLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    const std::string kind = o.get_string("pool", "max");
    CONVNET_CHECK(kind == "max" || kind == "avg", where(), ": pool must be \"max\" or \"avg\", got \"",
                  kind, "\"");
    g_.type = kind == "max" ? PoolType::Max : PoolType::Avg;
    g_.size = o.get_int("size");
    g_.stride = o.get_int("stride", g_.size);
    g_.ceil_mode = o.get_bool("ceil", false);
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

std::unique_ptr<Layer> make_pool_layer(const LayerSpec& s) { return std::make_unique<PoolLayer>(s); }

}  // namespace convnet

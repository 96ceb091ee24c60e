// Channel concat (joins towers) and split (takes a range of channels). In CHWN both are
// contiguous block copies.
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"
#include "layers/join.h"

namespace convnet {

namespace {

class ConcatLayer : public Layer {
 public:
  using Layer::Layer;
  Shape setup(const std::vector<Shape>& in) override {
    Shape out = in[0];
    out[0] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      CONVNET_CHECK(in[i][1] == in[0][1] && in[i][2] == in[0][2] && in[i][3] == in[0][3], where(),
                    ": input '", inputs()[i], "' has shape ", shape_str(in[i]), ", '", inputs()[0],
                    "' has ", shape_str(in[0]), " (concat needs equal height, width and batch)");
      out[0] += in[i][0];
    }
    return out;
  }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    join_inputs(in, out);
  }
  void backward(const std::vector<Tensor>& in, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    split_gradient(dout, in, din, accumulate);
  }
};

class SplitLayer : public Layer {
 public:
  explicit SplitLayer(const LayerSpec& spec) : Layer(spec) {
    start_ = spec.options.get_int("start");
    count_ = spec.options.get_int("count");
  }
  Shape setup(const std::vector<Shape>& in) override {
    CONVNET_CHECK(start_ >= 0 && count_ > 0 && start_ + count_ <= in[0][0], where(), ": channels [",
                  start_, ", ", start_ + count_, ") do not lie within the input's ", in[0][0]);
    Shape out = in[0];
    out[0] = count_;
    return out;
  }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    out.copy_from(in[0].channels(start_, count_));
  }
  void backward(const std::vector<Tensor>&, const Tensor&, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (!din[0].defined()) return;
    if (!accumulate[0]) din[0].fill(0.f);  // channels outside the range get no gradient
    Tensor part = din[0].channels(start_, count_);
    axpby(1.f, dout, part, true);
  }

 private:
  int start_ = 0, count_ = 0;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("concat", "joins its inputs along channels (towers)")
        .inputs(1, -1)
        .make<ConcatLayer>());
CONVNET_REGISTER_LAYER(
    LayerType("split", "channels [start, start + count) of its input")
        .required("start", OptionDecl::Kind::Int, "first channel")
        .required("count", OptionDecl::Kind::Int, "number of channels")
        .make<SplitLayer>());

}  // namespace convnet

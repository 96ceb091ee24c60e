// Fully connected: y[O, N] = f(W[O, I] * x[I, N] + b). A CHWN activation is already an I x N
// matrix (I = C*H*W), so no reshaping is needed; several inputs are joined row-wise.
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"
#include "layers/join.h"

namespace convnet {

namespace {

class FcLayer : public Layer {
 public:
  explicit FcLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    outputs_ = o.get_int("outputs");
    CONVNET_CHECK(outputs_ > 0, where(), ": outputs must be > 0, got ", outputs_);
    has_bias_ = o.get_bool("bias");
    neuron_ = read_neuron();
  }

  Shape setup(const std::vector<Shape>& in) override {
    int64_t rows = 0;
    for (const Shape& s : in) rows += int64_t(s[0]) * s[1] * s[2];
    if (params_.empty()) {
      add_param("weights", {outputs_, int(rows)}, false, rows);
      if (has_bias_) add_param("biases", {outputs_}, true, rows);
    } else {
      CONVNET_CHECK(params_[0].value.dim(1) == rows, where(), ": inputs now have ", rows,
                    " values per case, the weights expect ", params_[0].value.dim(1));
    }
    inputs_ = int(rows);
    batch_ = in[0][3];
    joined_ = Tensor();
    return {outputs_, 1, 1, batch_};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    const Tensor& x = input(in);
    gemm(false, false, 1.f, weights(params_[0].value), cases(x, inputs_), 0.f, cases(out, outputs_));
    bias_neuron_forward(out, has_bias_ ? params_[1].value : Tensor(), neuron_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    const Tensor dpre = gradient_before_neuron(neuron_, out, dout, dpre_, ctx);
    if (has_bias_) bias_backward(dpre, params_[1].grad, false);
    const Tensor& x = in.size() == 1 ? in[0] : joined_;
    // dW = dY * x^T
    gemm(false, true, 1.f, cases(dpre, outputs_), cases(x, inputs_), 0.f, weights(params_[0].grad));
    bool need_dx = false;
    for (const Tensor& d : din) need_dx = need_dx || d.defined();
    if (!need_dx) return;
    // dx = W^T * dY
    if (in.size() == 1) {
      gemm(true, false, 1.f, weights(params_[0].value), cases(dpre, outputs_),
           accumulate[0] ? 1.f : 0.f, cases(din[0], inputs_));
      return;
    }
    if (!djoined_.defined() || djoined_.shape() != joined_.shape())
      djoined_ = Tensor(joined_.shape(), device_);
    gemm(true, false, 1.f, weights(params_[0].value), cases(dpre, outputs_), 0.f,
         cases(djoined_, inputs_));
    split_gradient(djoined_, in, din, accumulate);
  }

 private:
  // The weights (or their gradient) as outputs x inputs, an activation as rows x cases.
  Matrix weights(const Tensor& w) const { return matrix(w, outputs_, inputs_); }
  Matrix cases(const Tensor& a, int rows) const { return matrix(a, rows, batch_); }

  const Tensor& input(const std::vector<Tensor>& in) {
    if (in.size() == 1) return in[0];
    if (!joined_.defined()) joined_ = Tensor({inputs_, 1, 1, batch_}, device_);
    join_inputs(in, joined_);
    return joined_;
  }

  int outputs_ = 0, inputs_ = 0, batch_ = 0;
  bool has_bias_ = true;
  Neuron neuron_;
  Tensor joined_, djoined_, dpre_;

 public:
  NamedTensors buffers() const override {
    return {{"joined inputs", joined_}, {"joined input gradients", djoined_}, {"gradient before the neuron", dpre_}};
  }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("fc", "fully connected, with bias and a fused neuron; several inputs are joined")
        .inputs(1, -1)
        .required("outputs", OptionDecl::Kind::Int, "output units")
        .options(neuron_options("linear"))
        .options(learning_options())
        .make<FcLayer>());

}  // namespace convnet

// Softmax fused with the multinomial logistic cost. Inputs: scores {K, 1, 1, N} and labels.
// Output: the class probabilities. The cost is the batch mean of -log p[label] times `coeff`,
// so the gradients that reach the parameters are batch averages (the paper's <dL/dw>).
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class SoftmaxCostLayer : public Layer {
 public:
  explicit SoftmaxCostLayer(const LayerSpec& spec) : Layer(spec) {
    coeff_ = float(spec.options.get_float("coeff"));
  }
  // Read back when asked (after the pass), so that the forward pass itself never waits for the
  // device.
  CostStats cost_stats() const override {
    CONVNET_CHECK(cases_.defined() && labels_.defined(), where(), ": no forward pass has run");
    return convnet::cost_stats(cases_, labels_, classes_);
  }
  float cost_coeff() const override { return coeff_; }

  Shape setup(const std::vector<Shape>& in) override {
    CONVNET_CHECK(in[1][0] == 1 && in[1][1] == 1 && in[1][2] == 1, where(), ": second input '",
                  inputs()[1], "' must be a labels layer, got shape ", shape_str(in[1]));
    CONVNET_CHECK(in[0][3] == in[1][3], where(), ": ", in[0][3], " score columns for ", in[1][3],
                  " labels");
    classes_ = in[0][0] * in[0][1] * in[0][2];
    cases_ = Tensor();  // sized for the new batch on the next forward pass
    labels_ = Tensor();
    return {classes_, 1, 1, in[0][3]};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    Tensor scores = in[0].reshaped(out.shape());
    if (!cases_.defined()) cases_ = Tensor({int(cost_cases_floats(out.dim(3)))}, device_);
    labels_ = in[1];
    softmax_cost_forward(scores, in[1], out, cases_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor&,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    if (!din[0].defined()) return;
    Tensor dscores = din[0].reshaped(out.shape());
    softmax_cost_backward(out, in[1], coeff_ / ctx.mean_over(out.dim(3)), dscores, accumulate[0]);
  }

 private:
  float coeff_ = 1.f;
  int classes_ = 0;
  Tensor cases_, labels_;  // per-case results of the last forward pass, and its labels

 public:
  NamedTensors buffers() const override { return {{"per-case results", cases_}, {"labels", labels_}}; }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("softmax_cost", "softmax and the multinomial logistic cost (cuda-convnet2's cost.logreg)")
        .role(LayerRole::Cost)
        .classifies()
        .inputs({"scores", "labels"})
        .option("coeff", 1.0, "weight of this cost in the objective")
        .make<SoftmaxCostLayer>());

}  // namespace convnet

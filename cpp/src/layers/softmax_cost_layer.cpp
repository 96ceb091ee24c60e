// Softmax fused with the multinomial logistic cost. Inputs: scores {K, 1, 1, N} and labels.
// Output: the class probabilities. The cost is the batch mean of -log p[label] times `coeff`,
// so the gradients that reach the parameters are batch averages (the paper's <dL/dw>).
#include "convnet/error.h"
#include "convnet/ops.h"
#include "layers/factories.h"

namespace convnet {

namespace {

class SoftmaxCostLayer : public Layer {
 public:
  explicit SoftmaxCostLayer(const LayerSpec& spec) : Layer(spec) {
    coeff_ = float(spec.options.get_float("coeff", 1.0));
  }
  std::pair<int, int> input_count() const override { return {2, 2}; }
  bool is_cost() const override { return true; }
  CostStats cost_stats() const override { return stats_; }
  float cost_coeff() const override { return coeff_; }

  Shape setup(const std::vector<Shape>& in) override {
    CONVNET_CHECK(in[1][0] == 1 && in[1][1] == 1 && in[1][2] == 1, where(), ": second input '",
                  inputs()[1], "' must be a labels layer, got shape ", shape_str(in[1]));
    CONVNET_CHECK(in[0][3] == in[1][3], where(), ": ", in[0][3], " score columns for ", in[1][3],
                  " labels");
    const int classes = in[0][0] * in[0][1] * in[0][2];
    return {classes, 1, 1, in[0][3]};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    Tensor scores = in[0].reshaped(out.shape());
    stats_ = softmax_cost_forward(scores, in[1], out);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor&,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (!din[0].defined()) return;
    Tensor dscores = din[0].reshaped(out.shape());
    softmax_cost_backward(out, in[1], coeff_ / float(out.dim(3)), dscores, accumulate[0]);
  }

 private:
  float coeff_ = 1.f;
  CostStats stats_;
};

}  // namespace

std::unique_ptr<Layer> make_softmax_cost_layer(const LayerSpec& s) {
  return std::make_unique<SoftmaxCostLayer>(s);
}

}  // namespace convnet

// The sum-of-squares cost (cuda-convnet2's cost.sum2): each case's cost is the sum of the squares
// of its input, e.g. to keep a code or an activation small. As every cost here it is a batch
// mean times `coeff`, so its gradient is 2 * coeff / N * x. It does not classify (the net reports
// its error rates as NaN). Output: each case's cost {1, 1, 1, N}.
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class Sum2CostLayer : public Layer {
 public:
  explicit Sum2CostLayer(const LayerSpec& spec) : Layer(spec) {
    coeff_ = float(spec.options.get_float("coeff"));
  }
  float cost_coeff() const override { return coeff_; }
  // Read back when asked (after the pass), so that the forward pass never waits for the device.
  CostStats cost_stats() const override {
    CONVNET_CHECK(cases_.defined(), where(), ": no forward pass has run");
    CostStats s;
    for (float c : cases_.to_vector()) s.cost_sum += c;
    return s;
  }

  Shape setup(const std::vector<Shape>& in) override {
    cases_ = Tensor();
    return {1, 1, 1, in[0][3]};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    sum_squares_per_case(in[0], out);
    cases_ = out;
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor&,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    if (din[0].defined()) axpby(2.f * coeff_ / ctx.mean_over(out.dim(3)), in[0], din[0], accumulate[0]);
  }

 private:
  float coeff_ = 1.f;
  Tensor cases_;  // the last forward pass's output: each case's cost

 public:
  NamedTensors buffers() const override { return {{"per-case costs", cases_}}; }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("sum2_cost", "sum of squares of the input per case (cuda-convnet2's cost.sum2)")
        .role(LayerRole::Cost)
        .inputs(1, 1)
        .option("coeff", 1.0, "weight of this cost in the objective")
        .make<Sum2CostLayer>());

}  // namespace convnet

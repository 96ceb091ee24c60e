// Locally connected layer, cuda-convnet2's `local`: a convolution whose every output position
// (module m = oy * out_w + ox) has its own filters and biases (unshared weights).
//   weights {out_h * out_w, filters, channels, size, size}: module m's bank is conv's
//           {filters, channels, size, size} layout, banks in row-major module order;
//   biases  {filters, out_h, out_w}: one per filter per module, in the output's (f, oy, ox)
//           order, added to every case.
// fan_in = channels * size * size (the scaled inits). Geometry, padding and the `ceil` output
// rule are conv's (ConvGeometry). Per chunk of output rows: im2col, then one GEMM per module
// (ops.h local_*); backward recomputes the columns, writes each module's dW (modules never span
// two chunks, so nothing accumulates across chunks) and col2im's the per-module W^T dY. Several
// inputs are joined along channels, as conv does.
#include <algorithm>

#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"
#include "layers/filter_geometry.h"
#include "layers/join.h"

namespace convnet {

namespace {


class LocalLayer : public Layer {
 public:
  explicit LocalLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    g_ = read_filter_options(o);
    has_bias_ = o.get_bool("bias");
    chunk_rows_option_ = o.get_int("chunk_rows");
    CONVNET_CHECK(chunk_rows_option_ >= 0, where(), ": chunk_rows must be >= 0, got ",
                  chunk_rows_option_);
    neuron_ = read_neuron();
  }

  Shape setup(const std::vector<Shape>& in) override {
    const ConvGeometry g = join_geometry(g_, in, inputs(), where());
    const Shape w_shape{int(g.out_pixels()), g.filters, g.channels, g.size, g.size};
    if (params_.empty()) {
      add_param("weights", w_shape, false, g.col_rows());
      if (has_bias_) add_param("biases", {g.filters, g.out_h, g.out_w}, true, g.col_rows());
    } else {
      // Unshared weights fix the input's size, not only its channels (a new batch size is fine).
      CONVNET_CHECK(params_[0].value.shape() == w_shape, where(), ": inputs of ", g.channels, "x",
                    g.height, "x", g.width, " need weights ", shape_str(w_shape), ", the layer has ",
                    shape_str(params_[0].value.shape()));
    }
    g_ = g;
    joined_ = Tensor();
    return {g_.filters, g_.out_h, g_.out_w, g_.batch};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    // Here, not in setup: the cap depends on the device, which a net gives after the first setup.
    chunk_rows_ = chunk_rows_for(g_, chunk_rows_option_, device_);
    const Tensor& x = input(in);
    for (int oy0 = 0; oy0 < g_.out_h; oy0 += chunk_rows_) {
      const int oy1 = std::min(g_.out_h, oy0 + chunk_rows_);
      local_forward(columns(x, oy0, oy1), params_[0].value, g_, oy0, oy1, out);
    }
    // Unshared biases: view the output as (filter, module) rows of N cases.
    Tensor rows = out.reshaped({int(g_.filters * g_.out_pixels()), 1, 1, g_.batch});
    bias_neuron_forward(rows, has_bias_ ? flat(params_[1].value) : Tensor(), neuron_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    const Tensor dpre = gradient_before_neuron(neuron_, out, dout, dpre_, ctx);
    if (has_bias_) {
      Tensor db = flat(params_[1].grad);
      bias_backward(dpre.reshaped({int(g_.filters * g_.out_pixels()), 1, 1, g_.batch}), db, false);
    }
    const Tensor& x = input(in);
    bool need_dx = false;
    for (const Tensor& d : din) need_dx = need_dx || d.defined();
    Tensor dx;
    if (need_dx) {
      dx = in.size() == 1 ? din[0] : djoined();
      if (in.size() > 1 || !accumulate[0]) dx.fill(0.f);  // col2im adds
    }
    for (int oy0 = 0; oy0 < g_.out_h; oy0 += chunk_rows_) {
      const int oy1 = std::min(g_.out_h, oy0 + chunk_rows_);
      local_backward_weights(columns(x, oy0, oy1), dpre, g_, oy0, oy1, params_[0].grad);
      if (!need_dx) continue;
      Tensor dcols = workspace_->get(im2col_floats(g_, oy0, oy1), 1);
      local_backward_data(params_[0].value, dpre, g_, oy0, oy1, dcols);
      col2im(dcols, g_, 0, oy0, oy1, dx);
    }
    if (need_dx && in.size() > 1) split_gradient(dx, in, din, accumulate);
  }

 private:
  static Tensor flat(const Tensor& t) { return t.reshaped({int(t.numel())}); }

  const Tensor& input(const std::vector<Tensor>& in) {
    if (in.size() == 1) return in[0];
    if (!joined_.defined()) joined_ = Tensor({g_.channels, g_.height, g_.width, g_.batch}, device_);
    join_inputs(in, joined_);
    return joined_;
  }
  Tensor& djoined() {
    if (!djoined_.defined() || djoined_.shape() != joined_.shape())
      djoined_ = Tensor(joined_.shape(), device_);
    return djoined_;
  }
  // The column matrix of output rows [oy0, oy1), in workspace slot 0.
  Tensor columns(const Tensor& x, int oy0, int oy1) {
    Tensor cols = workspace_->get(im2col_floats(g_, oy0, oy1), 0);
    im2col(x, g_, 0, oy0, oy1, cols);
    return cols;
  }

  ConvGeometry g_;
  Neuron neuron_;
  bool has_bias_ = true;
  int chunk_rows_ = 1, chunk_rows_option_ = 0;
  Tensor joined_, djoined_, dpre_;

 public:
  NamedTensors buffers() const override {
    return {{"joined inputs", joined_}, {"joined input gradients", djoined_}, {"gradient before the neuron", dpre_}};
  }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("local", "locally connected (cuda-convnet2's local): a convolution with its own "
              "filters and biases at every output position; several inputs are joined")
        .inputs(1, -1)
        .required("filters", OptionDecl::Kind::Int, "output channels")
        .required("size", OptionDecl::Kind::Int, "filter side")
        .option("stride", 1, "step between filter positions")
        .option("padding", 0, "zeros added on each side")
        .option("ceil", false, "round the output size up (cuda-convnet2: 1 + ceil((in + 2 padding - "
                "size) / stride); the last position reads zeros past the edge) rather than down")
        .option("chunk_rows", 0, "output rows per chunk of columns (0: as many as fit the workspace)")
        .options(neuron_options("linear"))
        .options(learning_options())
        .make<LocalLayer>());

}  // namespace convnet

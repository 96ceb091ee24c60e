// Convolution as whole-batch GEMM (cuda-convnet layout, CHWN):
//   out[F, (oy, ox, n)] = W[F, (c, ky, kx)] * cols[(c, ky, kx), (oy, ox, n)]
// per group, with cols from im2col. The column matrix is capped (filter_geometry.h) by chunking
// along output rows; a chunk of output rows is a column block of the output matrix, written with
// ldc = OH*OW*N. 1x1 stride-1 convolutions use the input as the column matrix. The bias add and
// the neuron are fused into one pass after the GEMMs.
#include <algorithm>

#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/ops.h"
#include "layers/filter_geometry.h"
#include "layers/join.h"

namespace convnet {

namespace {


class ConvLayer : public Layer {
 public:
  explicit ConvLayer(const LayerSpec& spec) : Layer(spec) {
    const LayerOptions& o = spec.options;
    g_ = read_filter_options(o);
    g_.groups = o.get_int("groups");
    has_bias_ = o.get_bool("bias");
    chunk_rows_option_ = o.get_int("chunk_rows");
    neuron_ = read_neuron();
  }

  Shape setup(const std::vector<Shape>& in) override {
    g_ = join_geometry(g_, in, inputs(), where());
    if (params_.empty()) {
      add_param("weights", {g_.filters, g_.group_channels(), g_.size, g_.size}, false, g_.col_rows());
      if (has_bias_) add_param("biases", {g_.filters}, true, g_.col_rows());
    }
    direct_ = g_.size == 1 && g_.stride == 1 && g_.pad == 0;
    joined_ = Tensor();
    return {g_.filters, g_.out_h, g_.out_w, g_.batch};
  }

  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    // Here, not in setup: the cap depends on the device, which a net gives after the first setup.
    chunk_rows_ = direct_ ? g_.out_h : chunk_rows_for(g_, chunk_rows_option_, device_);
    const Tensor& x = input(in);
    const Tensor& w = params_[0].value;
    const int64_t ohwn = g_.out_pixels() * g_.batch, k = g_.col_rows();
    const int fg = g_.group_filters();
    for (int oy0 = 0; oy0 < g_.out_h; oy0 += chunk_rows_) {
      const int oy1 = std::min(g_.out_h, oy0 + chunk_rows_);
      const int64_t cols_n = int64_t(oy1 - oy0) * g_.out_w * g_.batch;
      for (int grp = 0; grp < g_.groups; ++grp) {
        // out[group's filters, chunk's columns] = W_g * cols
        gemm(false, false, 1.f, matrix(w, grp * fg * k, fg, int(k), int(k)),
             columns(x, grp, oy0, oy1, 0), 0.f,
             matrix(out, grp * fg * ohwn + int64_t(oy0) * g_.out_w * g_.batch, fg, int(cols_n),
                    int(ohwn)));
      }
    }
    bias_neuron_forward(out, has_bias_ ? params_[1].value : Tensor(), neuron_);
  }

  void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext& ctx) override {
    // Gradient before the neuron.
    const Tensor dpre = gradient_before_neuron(neuron_, out, dout, dpre_, ctx);
    if (has_bias_) bias_backward(dpre, params_[1].grad, false);

    const Tensor& x = input(in);
    bool need_dx = false;
    for (const Tensor& d : din) need_dx = need_dx || d.defined();
    Tensor dx;
    if (need_dx) {
      dx = in.size() == 1 ? din[0] : djoined();
      if (in.size() > 1 || !accumulate[0]) dx.fill(0.f);  // col2im adds
    }
    const Tensor& w = params_[0].value;
    Tensor& dw = params_[0].grad;
    const int64_t ohwn = g_.out_pixels() * g_.batch, k = g_.col_rows();
    const int fg = g_.group_filters();
    for (int oy0 = 0; oy0 < g_.out_h; oy0 += chunk_rows_) {
      const int oy1 = std::min(g_.out_h, oy0 + chunk_rows_);
      const int64_t cols_n = int64_t(oy1 - oy0) * g_.out_w * g_.batch;
      for (int grp = 0; grp < g_.groups; ++grp) {
        const Matrix dy = matrix(dpre, grp * fg * ohwn + int64_t(oy0) * g_.out_w * g_.batch, fg,
                                 int(cols_n), int(ohwn));
        // dW_g (+)= dY_g,chunk * cols^T
        gemm(false, true, 1.f, dy, columns(x, grp, oy0, oy1, 0), oy0 == 0 ? 0.f : 1.f,
             matrix(dw, grp * fg * k, fg, int(k), int(k)));
        if (!need_dx) continue;
        const Matrix wg = matrix(w, grp * fg * k, fg, int(k), int(k));
        if (direct_) {  // dx_g += W_g^T dY_g, straight into the input gradient
          gemm(true, false, 1.f, wg, dy, 1.f, matrix(dx, grp * k * cols_n, int(k), int(cols_n), int(cols_n)));
        } else {
          Tensor dcols = workspace_->get(k * cols_n, 1);
          gemm(true, false, 1.f, wg, dy, 0.f, matrix(dcols, int(k), int(cols_n)));
          col2im(dcols, g_, grp * g_.group_channels(), oy0, oy1, dx);
        }
      }
    }
    if (need_dx && in.size() > 1) split_gradient(dx, in, din, accumulate);
  }

 private:
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
  // The column matrix of group `grp` for output rows [oy0, oy1): col_rows x (rows' columns).
  Matrix columns(const Tensor& x, int grp, int oy0, int oy1, int slot) {
    const int c0 = grp * g_.group_channels();
    const int rows = int(g_.col_rows()), n = int(im2col_floats(g_, oy0, oy1) / rows);
    if (direct_) return matrix(x, int64_t(c0) * g_.height * g_.width * g_.batch, rows, n, n);
    Tensor cols = workspace_->get(im2col_floats(g_, oy0, oy1), slot);
    im2col(x, g_, c0, oy0, oy1, cols);
    return matrix(cols, rows, n);
  }

  ConvGeometry g_;
  Neuron neuron_;
  bool has_bias_ = true, direct_ = false;
  int chunk_rows_ = 1, chunk_rows_option_ = 0;
  Tensor joined_, djoined_, dpre_;

 public:
  NamedTensors buffers() const override {
    return {{"joined inputs", joined_}, {"joined input gradients", djoined_}, {"gradient before the neuron", dpre_}};
  }
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("conv", "convolution (GEMM), bias and a fused neuron; several inputs are joined")
        .inputs(1, -1)
        .required("filters", OptionDecl::Kind::Int, "output channels")
        .required("size", OptionDecl::Kind::Int, "filter side")
        .option("stride", 1, "step between filter positions")
        .option("padding", 0, "zeros added on each side")
        .option("groups", 1, "channel groups (filters and input channels split evenly)")
        .option("ceil", false, "round the output size up (cuda-convnet2: 1 + ceil((in + 2 padding - "
                "size) / stride); the last position reads zeros past the edge) rather than down")
        .option("chunk_rows", 0, "output rows per GEMM chunk (0: as many as fit the workspace)")
        .options(neuron_options("linear"))
        .options(learning_options())
        .make<ConvLayer>());

}  // namespace convnet

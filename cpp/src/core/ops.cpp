// The dispatcher: every op of convnet/ops.h checks shapes and devices once, here, and then runs
// the implementation of the tensors' device. Backends trust what reaches them.
#include "convnet/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "convnet/error.h"
#include "convnet/op_profile.h"
#include "cpu/cpu_ops.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace convnet {

namespace {

#ifndef CONVNET_WITH_CUDA
[[noreturn]] void cuda_missing(const char* op) {
  throw RuntimeError(std::string(op) + ": this build has no CUDA backend");
}
#endif

void same_device(const char* op, const Tensor& a, const Tensor& b) {
  CONVNET_CHECK(a.device() == b.device(), op, ": tensors on different devices (",
                a.device().str(), " and ", b.device().str(), ")");
}

void same_shape(const char* op, const Tensor& a, const Tensor& b) {
  CONVNET_CHECK(a.shape() == b.shape(), op, ": shape mismatch ", shape_str(a.shape()), " vs ",
                shape_str(b.shape()));
  same_device(op, a, b);
}

void activation(const char* op, const Tensor& t) {
  CONVNET_CHECK(t.defined() && t.ndim() == 4, op, ": expected a CHWN activation, got ",
                t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor"));
}

int64_t inner_of(const Tensor& t) { return t.numel() / t.dim(0); }

}  // namespace

// Run backend function `fn` with `args` on the backend of `tensor`'s device (made current first);
// CONVNET_DISPATCH_VALUE is the same as an expression, for functions that return a value. The
// two backends declare each function with the same arguments (cpu/cpu_ops.h, cuda/cuda_ops.h).
#ifdef CONVNET_WITH_CUDA
#define CONVNET_DISPATCH_VALUE(tensor, fn, ...)                               \
  ((tensor).device().is_cpu() ? cpu::fn(__VA_ARGS__)                          \
                              : (cuda::set_device((tensor).device().index), \
                                 cuda::fn(__VA_ARGS__)))
#else
#define CONVNET_DISPATCH_VALUE(tensor, fn, ...)         \
  ((tensor).device().is_cpu() ? cpu::fn(__VA_ARGS__)    \
                              : (cuda_missing(#fn), decltype(cpu::fn(__VA_ARGS__))()))
#endif
#define CONVNET_DISPATCH(tensor, fn, ...) (void)CONVNET_DISPATCH_VALUE(tensor, fn, __VA_ARGS__)

Matrix matrix(const Tensor& t, int rows, int cols) {
  CONVNET_CHECK(t.defined() && int64_t(rows) * cols == t.numel(), "matrix: ", rows, " x ", cols,
                " of a tensor of ", t.defined() ? shape_str(t.shape()) : "nothing");
  return {t, 0, rows, cols, cols};
}

Matrix matrix(const Tensor& t, int64_t offset, int rows, int cols, int ld) {
  return {t, offset, rows, cols, ld};
}

namespace {

// The memory a matrix spans, [first, last) in floats of its device; empty for an empty matrix.
std::pair<const float*, const float*> span_of(const char* op, const char* name, const Matrix& x) {
  CONVNET_CHECK(x.tensor.defined(), op, ": ", name, " has no tensor");
  CONVNET_CHECK(x.offset >= 0 && x.rows >= 0 && x.cols >= 0 && x.ld >= std::max(1, x.cols), op,
                ": ", name, " is ", x.rows, " x ", x.cols, " at offset ", x.offset, " with ld ", x.ld);
  const int64_t extent = x.rows == 0 || x.cols == 0 ? 0 : int64_t(x.rows - 1) * x.ld + x.cols;
  CONVNET_CHECK(x.offset + extent <= x.tensor.numel(), op, ": ", name, " (", x.rows, " x ", x.cols,
                ", ld ", x.ld, ", offset ", x.offset, ") runs past its tensor of ",
                x.tensor.numel(), " elements");
  const float* first = x.tensor.data() + x.offset;
  return {first, first + extent};
}

void apart(const char* op, const char* a_name, std::pair<const float*, const float*> a,
           const char* b_name, std::pair<const float*, const float*> b) {
  CONVNET_CHECK(a.first == a.second || b.first == b.second || a.second <= b.first ||
                    b.second <= a.first,
                op, ": ", a_name, " and ", b_name, " share memory");
}

}  // namespace

void gemm(bool ta, bool tb, float alpha, const Matrix& a, const Matrix& b, float beta,
          const Matrix& c) {
  const auto sa = span_of("gemm", "A", a), sb = span_of("gemm", "B", b), sc = span_of("gemm", "C", c);
  same_device("gemm", a.tensor, b.tensor);
  same_device("gemm", a.tensor, c.tensor);
  const int m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
  const int kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
  CONVNET_CHECK(k == kb && c.rows == m && c.cols == n, "gemm: op(A) is ", m, " x ", k, ", op(B) ",
                kb, " x ", n, ", C ", c.rows, " x ", c.cols);
  apart("gemm", "C", sc, "A", sa);
  apart("gemm", "C", sc, "B", sb);
  Tensor out = c.tensor;  // a handle: C is written through it
  const OpTimer timer("gemm", out.device(), 2.0 * m * n * k,
                      4.0 * (double(m) * k + double(k) * n + double(m) * n * (beta == 0.f ? 1 : 2)));
  CONVNET_DISPATCH(out, gemm, ta, tb, m, n, k, alpha, sa.first, a.ld, sb.first, b.ld, beta,
                   out.data() + c.offset, c.ld);
}

static void check_conv_input(const char* op, const Tensor& x, const ConvGeometry& g, int c0,
                             int oy0, int oy1) {
  activation(op, x);
  CONVNET_CHECK(x.shape() == Shape({g.channels, g.height, g.width, g.batch}), op, ": input ",
                shape_str(x.shape()), " does not match the geometry (", g.channels, ", ", g.height,
                ", ", g.width, ", ", g.batch, ")");
  CONVNET_CHECK(c0 >= 0 && c0 + g.group_channels() <= g.channels, op, ": channel offset ", c0,
                " out of range");
  CONVNET_CHECK(0 <= oy0 && oy0 < oy1 && oy1 <= g.out_h, op, ": output rows [", oy0, ", ", oy1,
                ") out of range [0, ", g.out_h, ")");
}

int64_t im2col_floats(const ConvGeometry& g, int oy0, int oy1) {
  return g.col_rows() * int64_t(oy1 - oy0) * g.out_w * g.batch;
}

// Bytes of one group's input that output rows [oy0, oy1) read: the input rows their filters cover.
static double input_rows_bytes(const ConvGeometry& g, int oy0, int oy1) {
  const int first = std::max(0, oy0 * g.stride - g.pad);
  const int last = std::min(g.height, (oy1 - 1) * g.stride - g.pad + g.size);
  return 4.0 * g.group_channels() * std::max(0, last - first) * g.width * g.batch;
}

// The column buffer of im2col / col2im: big enough, on the activation's device, apart from it.
static void check_columns(const char* op, const Tensor& cols, const Tensor& x, const ConvGeometry& g,
                          int oy0, int oy1) {
  CONVNET_CHECK(cols.defined() && cols.numel() >= im2col_floats(g, oy0, oy1), op, ": the column ",
                "buffer holds ", cols.defined() ? cols.numel() : 0, " floats, ",
                im2col_floats(g, oy0, oy1), " needed");
  same_device(op, cols, x);
  apart(op, "the columns", {cols.data(), cols.data() + cols.numel()}, "the activation",
        {x.data(), x.data() + x.numel()});
}

void im2col(const Tensor& x, const ConvGeometry& g, int c0, int oy0, int oy1, Tensor& cols) {
  check_conv_input("im2col", x, g, c0, oy0, oy1);
  check_columns("im2col", cols, x, g, oy0, oy1);
  const OpTimer timer("im2col", x.device(), 0, 4.0 * im2col_floats(g, oy0, oy1) + input_rows_bytes(g, oy0, oy1));
  CONVNET_DISPATCH(x, im2col, x.data(), g, c0, oy0, oy1, cols.data());
}

void col2im(const Tensor& cols, const ConvGeometry& g, int c0, int oy0, int oy1, Tensor& dx) {
  check_conv_input("col2im", dx, g, c0, oy0, oy1);
  check_columns("col2im", cols, dx, g, oy0, oy1);
  const OpTimer timer("col2im", dx.device(), 0,
                      4.0 * im2col_floats(g, oy0, oy1) + 2 * input_rows_bytes(g, oy0, oy1));
  CONVNET_DISPATCH(dx, col2im, cols.data(), g, c0, oy0, oy1, dx.data());
}

void bias_neuron_forward(Tensor& y, const Tensor& bias, const Neuron& neuron) {
  activation("bias_neuron_forward", y);
  if (bias.defined()) {
    same_device("bias_neuron_forward", y, bias);
    CONVNET_CHECK(bias.numel() == y.dim(0), "bias_neuron_forward: ", bias.numel(),
                  " biases for ", y.dim(0), " channels");
  }
  const OpTimer timer("bias_neuron_forward", y.device(), 0, 8.0 * y.numel());
  CONVNET_DISPATCH(y, bias_neuron_forward, y.data(), bias.defined() ? bias.data() : nullptr,
                                            y.dim(0), inner_of(y), neuron);
}

void neuron_forward(const Tensor& x, Tensor& y, const Neuron& neuron) {
  same_shape("neuron_forward", x, y);
  const OpTimer timer("neuron_forward", x.device(), 0, 8.0 * x.numel());
  CONVNET_DISPATCH(x, neuron_forward, x.data(), y.data(), x.numel(), neuron);
}

void neuron_backward(const Tensor& y, const Tensor& dy, Tensor& dx, const Neuron& neuron,
                     bool accumulate) {
  same_shape("neuron_backward", y, dy);
  same_shape("neuron_backward", y, dx);
  const OpTimer timer("neuron_backward", y.device(), 0, 4.0 * y.numel() * (accumulate ? 4 : 3));
  CONVNET_DISPATCH(y, neuron_backward, y.data(), dy.data(), dx.data(), y.numel(), neuron, accumulate);
}

void bias_backward(const Tensor& dy, Tensor& db, bool accumulate) {
  activation("bias_backward", dy);
  same_device("bias_backward", dy, db);
  CONVNET_CHECK(db.numel() == dy.dim(0), "bias_backward: ", db.numel(), " biases for ",
                dy.dim(0), " channels");
  const OpTimer timer("bias_backward", dy.device(), 0, 4.0 * dy.numel());
  CONVNET_DISPATCH(dy, bias_backward, dy.data(), db.data(), dy.dim(0), inner_of(dy), accumulate);
}

static void check_lrn(const char* op, const Tensor& x, const LrnParams& p) {
  activation(op, x);
  CONVNET_CHECK(p.size >= 1, op, ": size must be >= 1, got ", p.size);
  CONVNET_CHECK(p.k > 0 || p.alpha > 0, op, ": k and alpha may not both be 0");
}

void lrn_forward(const Tensor& x, Tensor& y, Tensor& denom, const LrnParams& p) {
  check_lrn("lrn_forward", x, p);
  same_shape("lrn_forward", x, y);
  same_shape("lrn_forward", x, denom);
  // Every output reads a window of inputs across channels: writing in place would race on the
  // GPU and read overwritten values on the CPU.
  CONVNET_CHECK(y.data() != x.data() && denom.data() != x.data(),
                "lrn_forward: the output may not share memory with the input");
  CONVNET_DISPATCH(x, lrn_forward, x.data(), y.data(), denom.data(), x.dim(0), inner_of(x), p);
}

void lrn_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& dy,
                  Tensor& dx, const LrnParams& p, bool accumulate) {
  check_lrn("lrn_backward", x, p);
  for (const Tensor* t : {&y, &denom, &dy, static_cast<const Tensor*>(&dx)})
    same_shape("lrn_backward", x, *t);
  CONVNET_CHECK(dx.data() != dy.data() && dx.data() != y.data() && dx.data() != x.data() &&
                    dx.data() != denom.data(),
                "lrn_backward: dx may not share memory with x, y, denom or dy");
  CONVNET_DISPATCH(x, lrn_backward, x.data(), y.data(), denom.data(), dy.data(), dx.data(),
                                     x.dim(0), inner_of(x), p, accumulate);
}

static void check_rnorm(const char* op, const Tensor& x, const RnormParams& p) {
  activation(op, x);
  CONVNET_CHECK(p.size >= 1, op, ": size must be >= 1, got ", p.size);
  CONVNET_CHECK(p.k > 0 || p.alpha > 0, op, ": k and alpha may not both be 0");
}

void rnorm_forward(const Tensor& x, Tensor& y, Tensor& denom, const RnormParams& p) {
  check_rnorm("rnorm_forward", x, p);
  same_shape("rnorm_forward", x, y);
  same_shape("rnorm_forward", x, denom);
  // Every output reads a window of inputs (and the CPU uses y as scratch before writing it).
  CONVNET_CHECK(y.data() != x.data() && denom.data() != x.data() && y.data() != denom.data(),
                "rnorm_forward: x, y and denom must be three different tensors");
  CONVNET_DISPATCH(x, rnorm_forward, x.data(), y.data(), denom.data(), x.dim(0), x.dim(1),
                   x.dim(2), x.dim(3), p);
}

void rnorm_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& dy,
                    Tensor& dx, const RnormParams& p, bool accumulate) {
  check_rnorm("rnorm_backward", x, p);
  for (const Tensor* t : {&y, &denom, &dy, static_cast<const Tensor*>(&dx)})
    same_shape("rnorm_backward", x, *t);
  CONVNET_CHECK(dx.data() != dy.data() && dx.data() != y.data() && dx.data() != x.data() &&
                    dx.data() != denom.data(),
                "rnorm_backward: dx may not share memory with x, y, denom or dy");
  CONVNET_DISPATCH(x, rnorm_backward, x.data(), y.data(), denom.data(), dy.data(), dx.data(),
                   x.dim(0), x.dim(1), x.dim(2), x.dim(3), p, accumulate);
}

// The shared checks of the local ops: the geometry (groups 1), the rows, the weights' shape
// (`w`: the weights or their gradient), the output-shaped tensor `y` (the output or its
// gradient) and the column buffer, all on one device.
static void check_local(const char* op, const Tensor& cols, const Tensor& w, const Tensor& y,
                        const ConvGeometry& g, int oy0, int oy1) {
  CONVNET_CHECK(g.groups == 1, op, ": locally connected filters take no groups (got ", g.groups, ")");
  CONVNET_CHECK(g.out_h > 0 && g.out_w > 0, op, ": the geometry is not finished (no output size)");
  CONVNET_CHECK(0 <= oy0 && oy0 < oy1 && oy1 <= g.out_h, op, ": output rows [", oy0, ", ", oy1,
                ") out of range [0, ", g.out_h, ")");
  const Shape ws{int(g.out_pixels()), g.filters, g.channels, g.size, g.size};
  CONVNET_CHECK(w.defined() && w.shape() == ws, op, ": weights ",
                w.defined() ? shape_str(w.shape()) : std::string("undefined"), ", expected ",
                shape_str(ws));
  activation(op, y);
  CONVNET_CHECK(y.shape() == Shape({g.filters, g.out_h, g.out_w, g.batch}), op, ": output ",
                shape_str(y.shape()), " does not match the geometry (", g.filters, ", ", g.out_h,
                ", ", g.out_w, ", ", g.batch, ")");
  CONVNET_CHECK(cols.defined() && cols.numel() >= im2col_floats(g, oy0, oy1), op, ": the column ",
                "buffer holds ", cols.defined() ? cols.numel() : 0, " floats, ",
                im2col_floats(g, oy0, oy1), " needed");
  same_device(op, cols, w);
  same_device(op, cols, y);
}

// The work of one chunk of a locally connected layer's GEMMs (one small GEMM per output position,
// batch-wide): FLOP and the least bytes, the columns, the position's filters and the outputs.
static std::pair<double, double> local_work(const ConvGeometry& g, int oy0, int oy1) {
  const double positions = double(oy1 - oy0) * g.out_w, k = double(g.col_rows());
  return {2.0 * positions * g.filters * k * g.batch,
          4.0 * positions * (k * g.batch + g.filters * k + double(g.filters) * g.batch)};
}

void local_forward(const Tensor& cols, const Tensor& w, const ConvGeometry& g, int oy0, int oy1,
                   Tensor& y) {
  check_local("local_forward", cols, w, y, g, oy0, oy1);
  apart("local_forward", "y", {y.data(), y.data() + y.numel()}, "the columns",
        {cols.data(), cols.data() + cols.numel()});
  apart("local_forward", "y", {y.data(), y.data() + y.numel()}, "the weights",
        {w.data(), w.data() + w.numel()});
  const auto [flop, bytes] = local_work(g, oy0, oy1);
  const OpTimer timer("local_forward", cols.device(), flop, bytes);
  CONVNET_DISPATCH(cols, local_forward, cols.data(), w.data(), g, oy0, oy1, y.data());
}

void local_backward_data(const Tensor& w, const Tensor& dy, const ConvGeometry& g, int oy0,
                         int oy1, Tensor& dcols) {
  check_local("local_backward_data", dcols, w, dy, g, oy0, oy1);
  const std::pair<const float*, const float*> out{dcols.data(), dcols.data() + dcols.numel()};
  apart("local_backward_data", "the columns", out, "dy", {dy.data(), dy.data() + dy.numel()});
  apart("local_backward_data", "the columns", out, "the weights", {w.data(), w.data() + w.numel()});
  const auto [flop, bytes] = local_work(g, oy0, oy1);
  const OpTimer timer("local_backward_data", dcols.device(), flop, bytes);
  CONVNET_DISPATCH(dcols, local_backward_data, w.data(), dy.data(), g, oy0, oy1, dcols.data());
}

void local_backward_weights(const Tensor& cols, const Tensor& dy, const ConvGeometry& g, int oy0,
                            int oy1, Tensor& dw) {
  check_local("local_backward_weights", cols, dw, dy, g, oy0, oy1);
  const std::pair<const float*, const float*> out{dw.data(), dw.data() + dw.numel()};
  apart("local_backward_weights", "dw", out, "dy", {dy.data(), dy.data() + dy.numel()});
  apart("local_backward_weights", "dw", out, "the columns",
        {cols.data(), cols.data() + cols.numel()});
  const auto [flop, bytes] = local_work(g, oy0, oy1);
  const OpTimer timer("local_backward_weights", cols.device(), flop, bytes);
  CONVNET_DISPATCH(cols, local_backward_weights, cols.data(), dy.data(), g, oy0, oy1, dw.data());
}

static void check_pool(const char* op, const Tensor& x, const Tensor& y, const PoolGeometry& g) {
  activation(op, x);
  activation(op, y);
  same_device(op, x, y);
  CONVNET_CHECK(x.shape() == Shape({g.channels, g.height, g.width, g.batch}), op, ": input ",
                shape_str(x.shape()), " does not match the pooling geometry");
  CONVNET_CHECK(y.shape() == Shape({g.channels, g.out_h, g.out_w, g.batch}), op, ": output ",
                shape_str(y.shape()), " does not match the pooling geometry");
}

void pool_forward(const Tensor& x, Tensor& y, const PoolGeometry& g) {
  check_pool("pool_forward", x, y, g);
  CONVNET_DISPATCH(x, pool_forward, x.data(), y.data(), g);
}

void pool_backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                   const PoolGeometry& g, bool accumulate) {
  check_pool("pool_backward", x, y, g);
  same_shape("pool_backward", y, dy);
  same_shape("pool_backward", x, dx);
  CONVNET_DISPATCH(x, pool_backward, x.data(), y.data(), dy.data(), dx.data(), g, accumulate);
}

void lrn_pool_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& pooled,
                       const Tensor& dpooled, Tensor& dx, const LrnParams& lp,
                       const PoolGeometry& g, bool accumulate, Tensor& scratch) {
  const char* op = "lrn_pool_backward";
  check_lrn(op, x, lp);
  for (const Tensor* t : {&y, &denom, static_cast<const Tensor*>(&dx)}) same_shape(op, x, *t);
  check_pool(op, y, pooled, g);
  same_shape(op, pooled, dpooled);
  CONVNET_CHECK(dx.data() != x.data() && dx.data() != y.data() && dx.data() != denom.data() &&
                    dx.data() != dpooled.data(),
                op, ": dx may not share memory with x, y, denom or dpooled");
  // The one op whose backends differ in kind: the CPU composes its two primitives through
  // `scratch`; a GPU gathers the pooling gradient inside the LRN kernel (cuda/lrn_pool.cu).
  if (x.device().is_cpu()) {
    same_shape(op, y, scratch);
    for (const Tensor* t : {&x, &y, &denom, &dpooled, static_cast<const Tensor*>(&dx)})
      CONVNET_CHECK(scratch.data() != t->data(), op, ": scratch may not share memory with another argument");
    cpu::pool_backward(y.data(), pooled.data(), dpooled.data(), scratch.data(), g, false);
    cpu::lrn_backward(x.data(), y.data(), denom.data(), scratch.data(), dx.data(), x.dim(0),
                      inner_of(x), lp, accumulate);
    return;
  }
#ifdef CONVNET_WITH_CUDA
  cuda::set_device(x.device().index);
  cuda::lrn_pool_backward(x.data(), y.data(), denom.data(), dpooled.data(), dx.data(), lp, g,
                          accumulate);
#else
  cuda_missing(op);
#endif
}

void dropout_apply(const Tensor& in, Tensor& out, float rate, uint64_t seed, uint64_t step,
                   bool accumulate, const BatchShard& shard) {
  same_shape("dropout", in, out);
  CONVNET_CHECK(rate >= 0.f && rate < 1.f, "dropout: rate must be in [0, 1), got ", rate);
  const int64_t batch = in.shape().empty() ? 0 : in.shape().back();
  const int64_t global = shard.global ? shard.global : batch;
  CONVNET_CHECK(shard.first >= 0 && shard.first + batch <= global, "dropout: a shard of ", batch,
                " examples from ", shard.first, " does not fit a global batch of ", global);
  CONVNET_DISPATCH(in, dropout_apply, in.data(), out.data(), in.numel(), rate, seed, step, accumulate,
                   batch, global, shard.first);
}

static void check_cost(const char* op, const Tensor& probs, const Tensor& labels) {
  activation(op, probs);
  CONVNET_CHECK(probs.dim(1) == 1 && probs.dim(2) == 1, op, ": expected {K, 1, 1, N} scores, got ",
                shape_str(probs.shape()));
  CONVNET_CHECK(labels.numel() == probs.dim(3), op, ": ", labels.numel(), " labels for a batch of ",
                probs.dim(3));
  same_device(op, probs, labels);
}

// Labels are checked on the host: a bad label must name its case, never index out of bounds.
static void check_labels(const char* op, const Tensor& labels, int classes) {
  std::vector<float> host = labels.to_vector();
  for (size_t i = 0; i < host.size(); ++i) {
    float l = host[i];
    CONVNET_CHECK(l >= 0 && l < classes && l == static_cast<float>(static_cast<int>(l)), op,
                  ": label ", l, " of case ", i, " is not a class index in [0, ", classes, ")");
  }
}

int64_t cost_cases_floats(int batch) {
  static_assert(sizeof(double) == 2 * sizeof(float) && sizeof(int32_t) == sizeof(float));
  return 3 * int64_t(batch);
}

void softmax_cost_forward(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& cases) {
  check_cost("softmax_cost", logits, labels);
  same_shape("softmax_cost", logits, probs);
  same_device("softmax_cost", logits, cases);
  const int N = logits.dim(3);
  CONVNET_CHECK(cases.numel() == cost_cases_floats(N), "softmax_cost: the per-case buffer holds ",
                cases.numel(), " floats, a batch of ", N, " needs ", cost_cases_floats(N));
  CONVNET_CHECK(reinterpret_cast<uintptr_t>(cases.data()) % alignof(double) == 0,
                "softmax_cost: the per-case buffer must be 8-byte aligned (a whole tensor, not a "
                "view at an odd offset)");
  double* case_cost = reinterpret_cast<double*>(cases.data());
  int32_t* case_flags = reinterpret_cast<int32_t*>(cases.data() + 2 * int64_t(N));
  // The host checks the labels it has at hand; a GPU kernel flags a bad one (see cost_stats)
  // rather than make the pass wait for the host.
  if (logits.device().is_cpu()) check_labels("softmax_cost", labels, logits.dim(0));
  CONVNET_DISPATCH(logits, softmax_cost_forward, logits.data(), labels.data(), probs.data(),
                   logits.dim(0), N, case_cost, case_flags);
}

CostStats cost_stats(const Tensor& cases, const Tensor& labels, int classes) {
  const int N = int(labels.numel());
  CONVNET_CHECK(cases.numel() == cost_cases_floats(N), "cost_stats: the per-case buffer holds ",
                cases.numel(), " floats, ", N, " labels need ", cost_cases_floats(N));
  const std::vector<float> host = cases.to_vector();  // waits for the device
  std::vector<double> case_cost(static_cast<size_t>(N));
  std::vector<int32_t> case_flags(static_cast<size_t>(N));
  std::memcpy(case_cost.data(), host.data(), sizeof(double) * size_t(N));
  std::memcpy(case_flags.data(), host.data() + 2 * int64_t(N), sizeof(int32_t) * size_t(N));
  for (int n = 0; n < N; ++n)
    if (case_flags[n] & 4) {
      check_labels("softmax_cost", labels, classes);  // names the first bad case
      throw RuntimeError(detail::concat("softmax_cost: the device flagged the label of case ", n,
                                        " as no class index, yet it reads as one on the host"));
    }
  return cpu::sum_cost_cases(case_cost.data(), case_flags.data(), N);
}

CostStats softmax_cost_forward(const Tensor& logits, const Tensor& labels, Tensor& probs) {
  Tensor cases({int(cost_cases_floats(logits.ndim() == 4 ? logits.dim(3) : 0))}, logits.device());
  softmax_cost_forward(logits, labels, probs, cases);
  return cost_stats(cases, labels, logits.dim(0));
}

void softmax_cost_backward(const Tensor& probs, const Tensor& labels, float scale,
                           Tensor& dlogits, bool accumulate) {
  check_cost("softmax_cost_backward", probs, labels);
  same_shape("softmax_cost_backward", probs, dlogits);
  CONVNET_DISPATCH(probs, softmax_cost_backward, probs.data(), labels.data(), scale, dlogits.data(),
                                              probs.dim(0), probs.dim(3), accumulate);
}

void sum_squares_per_case(const Tensor& x, Tensor& out) {
  activation("sum_squares_per_case", x);
  same_device("sum_squares_per_case", x, out);
  CONVNET_CHECK(out.shape() == Shape({1, 1, 1, x.dim(3)}), "sum_squares_per_case: ",
                shape_str(out.shape()), " for ", x.dim(3), " cases (expected {1, 1, 1, ",
                x.dim(3), "})");
  CONVNET_DISPATCH(x, sum_squares_per_case, x.data(), out.data(), x.numel() / x.dim(3), x.dim(3));
}

void sgd_update(Tensor& w, const Tensor& grad, Tensor& v, float lr, float momentum,
                float weight_decay) {
  same_shape("sgd_update", w, grad);
  same_shape("sgd_update", w, v);
  CONVNET_DISPATCH(w, sgd_update, w.data(), grad.data(), v.data(), w.numel(), lr,
                                                    momentum, weight_decay);
}

void nesterov_update(Tensor& w, const Tensor& grad, Tensor& v, float lr, float momentum,
                     float weight_decay) {
  same_shape("nesterov_update", w, grad);
  same_shape("nesterov_update", w, v);
  CONVNET_DISPATCH(w, nesterov_update, w.data(), grad.data(), v.data(), w.numel(), lr, momentum,
                   weight_decay);
}

void adamw_update(Tensor& w, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h) {
  same_shape("adamw_update", w, grad);
  same_shape("adamw_update", w, m);
  same_shape("adamw_update", w, v);
  CONVNET_CHECK(h.step >= 1, "adamw_update: step must be >= 1 (it counts this update), got ", h.step);
  CONVNET_CHECK(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1,
                "adamw_update: betas must be in [0, 1), got ", h.beta1, " and ", h.beta2);
  CONVNET_CHECK(h.eps > 0, "adamw_update: eps must be > 0, got ", h.eps);
  // The bias corrections in double: beta^t underflows to 0 gracefully for large t.
  const double t = double(h.step);
  const double bc1 = 1.0 - std::pow(h.beta1, t);
  const double bc2 = 1.0 - std::pow(h.beta2, t);
  const float keep = float(1.0 - double(h.lr) * double(h.weight_decay));
  const float step_size = float(double(h.lr) / bc1);
  const float inv_bc2 = float(1.0 / std::sqrt(bc2));
  CONVNET_DISPATCH(w, adamw_update, w.data(), grad.data(), m.data(), v.data(), w.numel(), keep,
                   step_size, inv_bc2, float(h.beta1), float(1.0 - h.beta1), float(h.beta2),
                   float(1.0 - h.beta2), h.eps);
}

void axpby(float scale, const Tensor& src, Tensor& dst, bool accumulate) {
  CONVNET_CHECK(src.numel() == dst.numel(), "axpby: ", shape_str(src.shape()), " into ",
                shape_str(dst.shape()), " (element counts differ)");
  same_device("axpby", src, dst);
  CONVNET_DISPATCH(src, axpby, scale, src.data(), dst.data(), src.numel(), accumulate);
}

double sum_squares(const Tensor& x) {
  CONVNET_CHECK(x.defined(), "sum_squares: undefined tensor");
  return CONVNET_DISPATCH_VALUE(x, sum_squares, x.data(), x.numel());
}

double sum_squares(const std::vector<const Tensor*>& xs) {
  if (xs.empty()) return 0;
  for (const Tensor* x : xs) {
    CONVNET_CHECK(x && x->defined(), "sum_squares: undefined tensor");
    same_device("sum_squares", *xs[0], *x);
  }
  std::vector<const float*> data;
  std::vector<int64_t> counts;
  for (const Tensor* x : xs) {
    data.push_back(x->data());
    counts.push_back(x->numel());
  }
  return CONVNET_DISPATCH_VALUE(*xs[0], sum_squares, data, counts);
}

}  // namespace convnet

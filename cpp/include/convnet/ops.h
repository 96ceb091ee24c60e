// The primitive operations every layer is built from, declared once. Each takes Tensors, checks
// their shapes and devices (naming the op in any error), and runs the CPU or CUDA implementation
// of the tensors' device. Layers call these and never see a backend.
//
// Conventions: activations are CHWN (see tensor.h). A backward op either overwrites its input
// gradient or, with accumulate = true, adds to it (used where an output feeds several layers).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "convnet/tensor.h"

namespace convnet {

// ---- parameters of the ops ----

enum class NeuronType { Linear, Relu, LeakyRelu, Tanh, Logistic, Softsign };

struct Neuron {
  NeuronType type = NeuronType::Linear;
  float slope = 0.01f;  // leaky relu: f(x) = x for x > 0, slope * x otherwise
  // "linear", "relu", "leaky_relu" (or "lrelu"), "tanh", "logistic", "softsign"
  static Neuron parse(const std::string& name);
  std::string name() const;
};

// Convolution geometry. Square filters; zero padding on every side; floor output size.
struct ConvGeometry {
  int channels = 0, height = 0, width = 0, batch = 0;  // input, CHWN
  int filters = 0, size = 0, stride = 1, pad = 0, groups = 1;
  // Output size rounding. Floor (PyTorch, Caffe): out = (in + 2 pad - size) / stride + 1.
  // Ceil (cuda-convnet2's modulesX): out = 1 + ceil((in + 2 pad - size) / stride); the last
  // position may reach past the padded input on the bottom/right and reads zeros there.
  bool ceil_mode = false;
  int out_h = 0, out_w = 0;
  // Fills out_h/out_w; throws ValueError (prefixed by `who`) when the sizes do not fit.
  void finish(const std::string& who);
  int group_channels() const { return channels / groups; }
  int group_filters() const { return filters / groups; }
  int64_t col_rows() const { return int64_t(group_channels()) * size * size; }
  int64_t out_pixels() const { return int64_t(out_h) * out_w; }
};

enum class PoolType { Max, Avg };

// Pooling geometry. Floor mode: out = (in + 2 padding - size) / stride + 1. Ceil mode:
// out = ceil((in + 2 padding - size) / stride) + 1, dropping a last window that would start
// past the input and its left padding; windows that run past the padded edge are clipped, and
// average pooling divides by the number of cells the clipped window covers.
struct PoolGeometry {
  PoolType type = PoolType::Max;
  int channels = 0, height = 0, width = 0, batch = 0;
  int size = 2, stride = 2;
  bool ceil_mode = false;
  // Implicit cells on each side (PyTorch's padding=, at most size/2): window o covers
  // [o*stride - padding, o*stride - padding + size), clipped to the padded input. Max pooling
  // never picks a padded cell; average pooling divides by the window's cells with the padded
  // ones (count_padding, PyTorch's count_include_pad=True) or without them.
  int padding = 0;
  bool count_padding = true;
  int out_h = 0, out_w = 0;
  void finish(const std::string& who);
};

// Cross-map response normalisation, the AlexNet paper's formula (its alpha, not alpha/n):
//   b[i] = a[i] / (k + alpha * sum_{j=i-size/2}^{i-size/2+size-1} a[j]^2)^beta, j clipped to [0, C).
struct LrnParams {
  int size = 5;
  float k = 2.0f, alpha = 1e-4f, beta = 0.75f;
};

// Same-map response normalisation (cuda-convnet2's rnorm, ResponseNormLayer): each value is
// divided by a power of the sum of squares over a size x size spatial window of its own channel:
//   d[c,y,x,n] = k + alpha * sum_{y' in win(y), x' in win(x)} a[c,y',x',n]^2,  b = a * d^-beta,
// win(p) = [p - size/2, p - size/2 + size - 1] clipped to the image (cuda-convnet2's placement:
// odd sizes centred, even sizes one more before than after; no padding, the window just shrinks
// at the edges). alpha multiplies the sum directly: cuda-convnet2's cfg `scale` / size^2.
struct RnormParams {
  int size = 5;
  float k = 1.0f, alpha = 1e-4f, beta = 0.75f;
};

// ---- dense linear algebra ----

// A matrix in a tensor's memory: `rows` x `cols`, row-major, consecutive rows `ld` floats apart,
// the first element `offset` floats into the tensor. A block of a bigger matrix (one group's
// filters, a chunk of output columns) is a Matrix of that matrix's tensor.
struct Matrix {
  Tensor tensor;
  int64_t offset = 0;
  int rows = 0, cols = 0, ld = 0;
};
// The whole of `t` as rows x cols (rows * cols must be its element count).
Matrix matrix(const Tensor& t, int rows, int cols);
// rows x cols of `t` from `offset` on, rows `ld` apart.
Matrix matrix(const Tensor& t, int64_t offset, int rows, int cols, int ld);

// C = alpha * op(A) * op(B) + beta * C, op(X) = X^T when trans_x. Checked: each matrix lies within
// its tensor, the shapes fit, all three are on one device, and C overlaps neither A nor B. With
// beta = 0, C's old contents are never read.
void gemm(bool trans_a, bool trans_b, float alpha, const Matrix& a, const Matrix& b, float beta,
          const Matrix& c);

// ---- convolution pieces (whole batch, CHWN) ----

// cols[(c, ky, kx), (oy - oy0, ox, n)] = x[c0 + c, oy*s - pad + ky, ox*s - pad + kx, n] (0 outside),
// for c in [0, group_channels) and output rows oy in [oy0, oy1). `cols` holds at least
// col_rows * (oy1 - oy0) * out_w * N floats (im2col_floats), on x's device, apart from x.
int64_t im2col_floats(const ConvGeometry& g, int oy0, int oy1);
void im2col(const Tensor& x, const ConvGeometry& g, int c0, int oy0, int oy1, Tensor& cols);
// The adjoint of im2col: adds every column entry back into dx.
void col2im(const Tensor& cols, const ConvGeometry& g, int c0, int oy0, int oy1, Tensor& dx);

// ---- neurons and biases ----

// y[r, j] = f(y[r, j] + bias[r]) in place; y is viewed as rows x (numel / rows). bias may be
// undefined (no bias).
void bias_neuron_forward(Tensor& y, const Tensor& bias, const Neuron& neuron);
// y = f(x).
void neuron_forward(const Tensor& x, Tensor& y, const Neuron& neuron);
// dx = dy * f'(x), written through the output y = f(x) (every supported neuron allows it).
void neuron_backward(const Tensor& y, const Tensor& dy, Tensor& dx, const Neuron& neuron,
                     bool accumulate);
// db[r] (+)= sum_j dy[r, j], dy viewed as rows x (numel / rows) with rows = db.numel().
void bias_backward(const Tensor& dy, Tensor& db, bool accumulate);

// ---- local response normalisation (across channels) ----

// denom receives (k + alpha * sum a^2) for the backward pass; all three tensors share x's shape.
void lrn_forward(const Tensor& x, Tensor& y, Tensor& denom, const LrnParams& p);
void lrn_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& dy,
                  Tensor& dx, const LrnParams& p, bool accumulate);

// ---- response normalisation within each channel (spatial window) ----

// As lrn_forward/lrn_backward, with RnormParams' spatial window instead of LRN's channel window.
void rnorm_forward(const Tensor& x, Tensor& y, Tensor& denom, const RnormParams& p);
void rnorm_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& dy,
                    Tensor& dx, const RnormParams& p, bool accumulate);

// ---- locally connected filters (unshared weights; cuda-convnet2's `local` layer) ----

// The geometry is a convolution's (ConvGeometry, groups = 1), but every output position (module
// m = oy * out_w + ox) has its own filter bank: w is {out_h * out_w, filters, channels, size,
// size}, module m's bank a filters x col_rows matrix. The ops work on the column matrix that
// im2col(x, g, 0, oy0, oy1, cols) writes for output rows [oy0, oy1), in which module m's inputs
// are the col_rows x N block at column (m - oy0 * out_w) * N; one GEMM per module.
//   local_forward:          y[f, m, n] = sum_r w[m, f, r] * cols[r, m, n]   (y {F, OH, OW, N})
//   local_backward_data:    dcols[r, m, n] = sum_f w[m, f, r] * dy[f, m, n]  (then col2im)
//   local_backward_weights: dw[m, f, r] = sum_n dy[f, m, n] * cols[r, m, n]
// Each writes only the modules of rows [oy0, oy1) of y, dcols and dw (overwriting them).
// The per-module GEMMs' layout for rows [oy0, oy1), shared by both backends: modules
// [first, first + count), k = col_rows, n = batch, the leading dimensions of the column matrix
// (ldcols) and of y/dy (ldy), and the floats between two modules' banks of w.
struct LocalModules {
  int64_t first, count, k, n, ldcols, ldy, bank;
};
inline LocalModules local_modules(const ConvGeometry& g, int oy0, int oy1) {
  const int64_t count = int64_t(oy1 - oy0) * g.out_w, n = g.batch, k = g.col_rows();
  return {int64_t(oy0) * g.out_w, count, k, n, count * n, g.out_pixels() * n, g.filters * k};
}
void local_forward(const Tensor& cols, const Tensor& w, const ConvGeometry& g, int oy0, int oy1,
                   Tensor& y);
void local_backward_data(const Tensor& w, const Tensor& dy, const ConvGeometry& g, int oy0,
                         int oy1, Tensor& dcols);
void local_backward_weights(const Tensor& cols, const Tensor& dy, const ConvGeometry& g, int oy0,
                            int oy1, Tensor& dw);

// ---- pooling ----

void pool_forward(const Tensor& x, Tensor& y, const PoolGeometry& g);
// Max pooling routes each output's gradient to the first maximal input of its window
// (row-major order within the window).
void pool_backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                   const PoolGeometry& g, bool accumulate);

// ---- LRN then pooling, backward through both (AlexNet's conv1 and conv2 blocks) ----

// dx (+)= the gradient with respect to x of pool(lrn(x)), from the pool's output gradient
// dpooled: pool_backward into the gradient of y = lrn(x), then lrn_backward, in one call. x, y,
// denom as lrn_forward left them; g pools y into `pooled`. On a GPU one kernel does both, and the
// gradient of y never goes to memory; the CPU composes the two through `scratch` (y's shape; on
// a GPU it is not used and may be undefined). The same numbers as the two calls, bit for bit.
void lrn_pool_backward(const Tensor& x, const Tensor& y, const Tensor& denom, const Tensor& pooled,
                       const Tensor& dpooled, Tensor& dx, const LrnParams& lp,
                       const PoolGeometry& g, bool accumulate, Tensor& scratch);

// ---- dropout (inverted: kept units scaled by 1/(1-rate) in training; identity at test) ----

// Where a batch lies in the global batch that data parallelism splits: its N examples are
// [first, first + N) of `global` (global 0: it is the whole batch).
struct BatchShard {
  int64_t first = 0, global = 0;
};

// out = in * mask / (1 - rate). The mask of element (r, n) of an activation whose last dimension
// is the batch (row r, example n) is philox_uniform(seed, step, r * G + first + n) >= rate, G the
// global batch: keyed by the example, not by its place in this shard, so that K shards draw what
// the whole batch draws (with the whole batch, the counter is simply the element's index). The
// mask is never stored: the backward pass calls this again with the same seed, step and shard.
void dropout_apply(const Tensor& in, Tensor& out, float rate, uint64_t seed, uint64_t step,
                   bool accumulate, const BatchShard& shard = {});

// ---- softmax with multinomial logistic cost ----

struct CostStats {
  double cost_sum = 0;    // sum over the batch of -log p[label]
  int64_t top1_errors = 0;  // cases whose label is not the most probable class
  int64_t top5_errors = 0;  // cases whose label is not among the 5 most probable classes
};

// logits and probs are {K, 1, 1, N}; labels {1, 1, 1, N} holding class indices as floats.
// A label outside [0, K) is a ValueError naming the case.
CostStats softmax_cost_forward(const Tensor& logits, const Tensor& labels, Tensor& probs);

// The same in two halves, for the net: the forward pass leaves each case's result in `cases` on
// the logits' device, so that on a GPU it never waits for the host (a captured CUDA graph
// cannot), and cost_stats() brings them back and sums them in case order. `cases` is raw storage
// of cost_cases_floats(N) floats: N doubles (each case's cost), then N int32 flags (bit 0: top-1
// error, bit 1: top-5 error, bit 2: the label is not a class index).
int64_t cost_cases_floats(int batch);
void softmax_cost_forward(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& cases);
// Waits for the device. A bad label is a ValueError naming the case: the CPU refuses it before
// computing; on a GPU the kernel flags it (never reading out of bounds) and it is reported here.
CostStats cost_stats(const Tensor& cases, const Tensor& labels, int classes);
// dlogits = scale * (probs - onehot(labels)); the layer passes scale = coeff / N.
void softmax_cost_backward(const Tensor& probs, const Tensor& labels, float scale,
                           Tensor& dlogits, bool accumulate);

// The sum-of-squares cost (cuda-convnet2's cost.sum2): out[n] = sum over (c, y, x) of
// x[c, y, x, n]^2, each case's sum taken in double in row order; x {C, H, W, N}, out {1, 1, 1, N}.
void sum_squares_per_case(const Tensor& x, Tensor& out);

// ---- the SGD update of the AlexNet paper ----

// v <- momentum * v - weight_decay * lr * w - lr * grad;  w <- w + v
void sgd_update(Tensor& w, const Tensor& grad, Tensor& v, float lr, float momentum,
                float weight_decay);

// ---- the other solvers (convnet/solver.h chooses among them) ----

// Nesterov momentum (Sutskever et al. 2013, in PyTorch's form), with the velocity kept as SGD
// keeps it (at a constant lr it holds -lr times PyTorch's buffer; SGD's and Nesterov's velocity
// mean the same):
//   s <- weight_decay * lr * w + lr * grad
//   v <- momentum * v - s;   w <- w + momentum * v - s      (the second line reads the new v)
void nesterov_update(Tensor& w, const Tensor& grad, Tensor& v, float lr, float momentum,
                     float weight_decay);

// AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW), `step` = t >= 1 counting this update:
//   w <- w - lr * weight_decay * w                       (decoupled decay, before the step)
//   m <- beta1 * m + (1 - beta1) * grad
//   v <- beta2 * v + (1 - beta2) * grad^2
//   w <- w - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// The bias corrections and 1 - beta are computed once per call in double on the host (betas are
// doubles so that 1 - beta is the float nearest the true value); the kernels evaluate
//   w <- w * (1 - lr * weight_decay) - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
struct AdamWHyper {
  float lr = 0, weight_decay = 0;
  double beta1 = 0.9, beta2 = 0.999;
  float eps = 1e-8f;
  uint64_t step = 1;
};
void adamw_update(Tensor& w, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h);

// ---- elementwise and copies ----

// dst (+)= scale * src; shapes may differ as long as the element counts match.
void axpby(float scale, const Tensor& src, Tensor& dst, bool accumulate);

// Sum of squares of every element, accumulated in double in a fixed order (the same result for
// any thread count): gradient norms for the trainer's divergence watch.
double sum_squares(const Tensor& x);
// The same over several tensors on one device, equal to adding sum_squares of each in order; on
// a GPU it waits for the device once, not once per tensor.
double sum_squares(const std::vector<const Tensor*>& xs);

}  // namespace convnet

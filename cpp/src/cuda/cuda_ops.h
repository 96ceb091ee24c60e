// The CUDA backend's ops: the same primitives as the CPU backend (cpu/cpu_ops.h), with the same
// signatures and meaning, on device pointers. The dispatcher (core/ops.cpp) makes the tensors'
// device current before calling; every kernel runs on that device's compute stream
// (cuda/runtime.h: streams, memory, graphs),
// asynchronously: results that the host needs (cost statistics, sums of squares) come back
// through explicit copies.
// Compiled whenever nvcc is found (CONVNET_WITH_CUDA); each .cu file in this folder holds one op
// family, and starts with the CPU reference it must match (cpu/<same name>.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "convnet/ops.h"
#include "cuda/runtime.h"

namespace convnet::cuda {

// ---- GEMM (blas.cpp) ----

// Row-major C = alpha op(A) op(B) + beta C through cuBLAS (column-major), current device.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// ---- kernels: one per primitive of cpu/cpu_ops.h, same arguments, device pointers ----

// im2col.cu
void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols);
void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx);

// neuron.cu
void bias_neuron_forward(float* y, const float* bias, int rows, int64_t inner, const Neuron& nr);
void neuron_forward(const float* x, float* y, int64_t n, const Neuron& nr);
void neuron_backward(const float* y, const float* dy, float* dx, int64_t n, const Neuron& nr,
                     bool accumulate);
void bias_backward(const float* dy, float* db, int rows, int64_t inner, bool accumulate);

// lrn.cu
void lrn_forward(const float* x, float* y, float* denom, int channels, int64_t inner,
                 const LrnParams& p);
void lrn_backward(const float* x, const float* y, const float* denom, const float* dy, float* dx,
                  int channels, int64_t inner, const LrnParams& p, bool accumulate);

// lrn.cu, same-map (spatial window) response normalisation. Activations {C, H, W, N}.
void rnorm_forward(const float* x, float* y, float* denom, int channels, int height, int width,
                   int batch, const RnormParams& p);
void rnorm_backward(const float* x, const float* y, const float* denom, const float* dy,
                    float* dx, int channels, int height, int width, int batch,
                    const RnormParams& p, bool accumulate);

// local.cu: one cuBLAS GEMM per module of output rows [oy0, oy1) (ops.h local_*).
void local_forward(const float* cols, const float* w, const ConvGeometry& g, int oy0, int oy1,
                   float* y);
void local_backward_data(const float* w, const float* dy, const ConvGeometry& g, int oy0, int oy1,
                         float* dcols);
void local_backward_weights(const float* cols, const float* dy, const ConvGeometry& g, int oy0,
                            int oy1, float* dw);

// pool.cu
void pool_forward(const float* x, float* y, const PoolGeometry& g);
void pool_backward(const float* x, const float* y, const float* dy, float* dx,
                   const PoolGeometry& g, bool accumulate);

// lrn_pool.cu: pool_backward of y (geometry g) then lrn_backward, without writing the gradient
// of y; channels and inner come from g. Reference: the two CPU primitives in sequence.
void lrn_pool_backward(const float* x, const float* y, const float* denom, const float* dpooled,
                       float* dx, const LrnParams& lp, const PoolGeometry& g, bool accumulate);

// dropout.cu
// The element at row r, column c of `cols`-wide rows (the batch) draws counter
// r * global_cols + offset + c (ops.h BatchShard); cols == global_cols, offset 0: counter i.
void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate, int64_t cols, int64_t global_cols, int64_t offset);

// softmax_cost.cu. Labels are not checked beforehand: a case whose label is no class index gets
// flag bit 2 (cost_stats reports it), and nothing is read out of bounds.
void softmax_cost_forward(const float* logits, const float* labels, float* probs, int classes,
                          int batch, double* case_cost, int32_t* case_flags);
void softmax_cost_backward(const float* probs, const float* labels, float scale, float* dlogits,
                           int classes, int batch, bool accumulate);

// sum2_cost.cu
void sum_squares_per_case(const float* x, float* out, int64_t rows, int batch);

// sgd.cu
void sgd_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                float weight_decay);
void nesterov_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                     float weight_decay);
// keep = 1 - lr * weight_decay; step_size = lr / (1 - beta1^t); inv_bc2 = 1 / sqrt(1 - beta2^t);
// c1 = 1 - beta1, c2 = 1 - beta2 (each rounded once from double).
void adamw_update(float* w, const float* grad, float* m, float* v, int64_t n, float keep,
                  float step_size, float inv_bc2, float beta1, float c1, float beta2, float c2,
                  float eps);

// elementwise.cu
void axpby(float scale, const float* src, float* dst, int64_t n, bool accumulate);
void fill(float* dst, int64_t n, float value);
double sum_squares(const float* x, int64_t n);
// The sum over several tensors (xs[i] holds ns[i] floats) with a single sync.
double sum_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& ns);
void copy(const float* src, float* dst, int64_t n);

}  // namespace convnet::cuda

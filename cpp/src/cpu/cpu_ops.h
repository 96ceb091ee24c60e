// The CPU backend: one function per primitive of convnet/ops.h, on raw host pointers.
// Shapes were checked by the dispatcher (core/ops.cpp); these trust them. Loops run in
// parallel with OpenMP; GEMM is OpenBLAS (CBLAS). Each .cpp in this folder holds one op family.
#pragma once
#include <cstdint>
#include <vector>

#include "convnet/ops.h"

namespace convnet::cpu {

// blas.cpp
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
// Threads used by OpenBLAS and by our OpenMP loops (0 = leave the library defaults).
void set_num_threads(int n);
// Whether this OpenBLAS computes a column of C with other bits when it ends a call than when it
// lies inside one (its Haswell kernels, for AVX2 CPUs, do; its SkylakeX kernels do not). Where it
// does, replicas that split a batch compute other roundings than one device does; the thread
// count never changes a GEMM's bits either way (gemm splits per processor, not per thread).
bool blas_call_edges_change_bits();
int num_threads();
const char* blas_name();

// march.cpp: the build's CONVNET_MARCH ("native", "portable", ...).
const char* march();

// im2col.cpp
void im2col(const float* x, const ConvGeometry& g, int c0, int oy0, int oy1, float* cols);
void col2im(const float* cols, const ConvGeometry& g, int c0, int oy0, int oy1, float* dx);

// neuron.cpp. `inner` is the number of elements per bias row.
void bias_neuron_forward(float* y, const float* bias, int rows, int64_t inner, const Neuron& nr);
void neuron_forward(const float* x, float* y, int64_t n, const Neuron& nr);
void neuron_backward(const float* y, const float* dy, float* dx, int64_t n, const Neuron& nr,
                     bool accumulate);
void bias_backward(const float* dy, float* db, int rows, int64_t inner, bool accumulate);

// lrn.cpp. Activations {C, inner} with inner = H*W*N.
void lrn_forward(const float* x, float* y, float* denom, int channels, int64_t inner,
                 const LrnParams& p);
void lrn_backward(const float* x, const float* y, const float* denom, const float* dy, float* dx,
                  int channels, int64_t inner, const LrnParams& p, bool accumulate);

// lrn.cpp, same-map (spatial window) response normalisation. Activations {C, H, W, N}.
void rnorm_forward(const float* x, float* y, float* denom, int channels, int height, int width,
                   int batch, const RnormParams& p);
void rnorm_backward(const float* x, const float* y, const float* denom, const float* dy,
                    float* dx, int channels, int height, int width, int batch,
                    const RnormParams& p, bool accumulate);

// local.cpp: one GEMM per module of output rows [oy0, oy1) (ops.h local_*).
void local_forward(const float* cols, const float* w, const ConvGeometry& g, int oy0, int oy1,
                   float* y);
void local_backward_data(const float* w, const float* dy, const ConvGeometry& g, int oy0, int oy1,
                         float* dcols);
void local_backward_weights(const float* cols, const float* dy, const ConvGeometry& g, int oy0,
                            int oy1, float* dw);

// pool.cpp
void pool_forward(const float* x, float* y, const PoolGeometry& g);
void pool_backward(const float* x, const float* y, const float* dy, float* dx,
                   const PoolGeometry& g, bool accumulate);

// dropout.cpp
// The element at row r, column c of `cols`-wide rows (the batch) draws counter
// r * global_cols + offset + c (ops.h BatchShard); cols == global_cols, offset 0: counter i.
void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate, int64_t cols, int64_t global_cols, int64_t offset);

// softmax_cost.cpp. logits/probs {K, N}; labels N floats already checked to lie in [0, K).
// Each case's cost goes to case_cost[n], its error flags (bit 0 top-1, bit 1 top-5) to
// case_flags[n]; sum_cost_cases adds them up in case order, as every backend does.
void softmax_cost_forward(const float* logits, const float* labels, float* probs, int classes,
                          int batch, double* case_cost, int32_t* case_flags);
CostStats sum_cost_cases(const double* case_cost, const int32_t* case_flags, int batch);
void softmax_cost_backward(const float* probs, const float* labels, float scale, float* dlogits,
                           int classes, int batch, bool accumulate);

// sum2_cost.cpp. x {rows, batch}; out[n] = sum over rows of x[r, n]^2, in double.
void sum_squares_per_case(const float* x, float* out, int64_t rows, int batch);

// sgd.cpp
void sgd_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                float weight_decay);
void nesterov_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                     float weight_decay);
// keep = 1 - lr * weight_decay; step_size = lr / (1 - beta1^t); inv_bc2 = 1 / sqrt(1 - beta2^t);
// c1 = 1 - beta1, c2 = 1 - beta2 (each rounded once from double).
void adamw_update(float* w, const float* grad, float* m, float* v, int64_t n, float keep,
                  float step_size, float inv_bc2, float beta1, float c1, float beta2, float c2,
                  float eps);

// elementwise.cpp
void axpby(float scale, const float* src, float* dst, int64_t n, bool accumulate);
void fill(float* dst, int64_t n, float value);
double sum_squares(const float* x, int64_t n);
// The sum over several arrays (xs[i] holds ns[i] floats), adding each one's sum in order.
double sum_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& ns);
void copy(const float* src, float* dst, int64_t n);
// dst[c * rows + r] = src[r * cols + c]: a rows x cols matrix transposed, in tiles that stay in
// cache, shared among the threads (NCHW <-> CHWN is an N x CHW transpose).
void transpose(const float* src, int64_t rows, int64_t cols, float* dst);

}  // namespace convnet::cpu

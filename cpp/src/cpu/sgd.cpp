// CPU solver updates (formulas in convnet/ops.h and convnet/solver.h):
//   SGD, the AlexNet paper's rule: v <- momentum * v - weight_decay * lr * w - lr * grad;  w <- w + v
//   Nesterov: s <- weight_decay * lr * w + lr * grad;  v <- momentum * v - s;  w <- w + momentum * v - s
//   AdamW: w <- w * keep - step_size * m / (sqrt(v) * inv_bc2 + eps), m and v updated first
#include <cmath>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {

namespace {
// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

CONVNET_CPU_CLONES
void sgd_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                float weight_decay) {
  const float decay = weight_decay * lr;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float vi = momentum * v[i] - decay * w[i] - lr * grad[i];
    v[i] = vi;
    w[i] += vi;
  }
}

void nesterov_update(float* w, const float* grad, float* v, int64_t n, float lr, float momentum,
                     float weight_decay) {
  const float decay = weight_decay * lr;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float s = decay * w[i] + lr * grad[i];
    const float vi = momentum * v[i] - s;
    v[i] = vi;
    w[i] += momentum * vi - s;
  }
}

void adamw_update(float* w, const float* grad, float* m, float* v, int64_t n, float keep,
                  float step_size, float inv_bc2, float beta1, float c1, float beta2, float c2,
                  float eps) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + c1 * g;
    const float vi = beta2 * v[i] + c2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * keep - step_size * mi / (std::sqrt(vi) * inv_bc2 + eps);
  }
}

}  // namespace convnet::cpu

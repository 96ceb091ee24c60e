// CPU SGD with momentum and weight decay, the AlexNet paper's rule:
//   v <- momentum * v - weight_decay * lr * w - lr * grad;   w <- w + v
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

}  // namespace convnet::cpu

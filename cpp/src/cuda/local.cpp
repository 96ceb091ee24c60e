// CUDA locally connected filters (ops.h local_*). Reference: cpu/local.cpp (the same GEMM per
// module, with the same operands; cuBLAS in place of OpenBLAS). One cuBLAS call per module, all
// queued on the current lane's stream. The operands' strides are constant across modules, so a
// strided-batched GEMM would do a chunk in one call; cuda_emu has no batched GEMM yet, and a
// loop of ordinary calls is what it can check.
#include <cstdint>

#include "cuda/cuda_ops.h"

namespace convnet::cuda {

void local_forward(const float* cols, const float* w, const ConvGeometry& g, int oy0, int oy1,
                   float* y) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for (int64_t j = 0; j < md.count; ++j) {
    const int64_t m = md.first + j;
    gemm(false, false, g.filters, int(md.n), int(md.k), 1.f, w + m * md.bank, int(md.k),
         cols + j * md.n, int(md.ldcols), 0.f, y + m * md.n, int(md.ldy));
  }
}

void local_backward_data(const float* w, const float* dy, const ConvGeometry& g, int oy0, int oy1,
                         float* dcols) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for (int64_t j = 0; j < md.count; ++j) {
    const int64_t m = md.first + j;
    gemm(true, false, int(md.k), int(md.n), g.filters, 1.f, w + m * md.bank, int(md.k),
         dy + m * md.n, int(md.ldy), 0.f, dcols + j * md.n, int(md.ldcols));
  }
}

void local_backward_weights(const float* cols, const float* dy, const ConvGeometry& g, int oy0,
                            int oy1, float* dw) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for (int64_t j = 0; j < md.count; ++j) {
    const int64_t m = md.first + j;
    gemm(false, true, g.filters, int(md.k), int(md.n), 1.f, dy + m * md.n, int(md.ldy),
         cols + j * md.n, int(md.ldcols), 0.f, dw + m * md.bank, int(md.k));
  }
}

}  // namespace convnet::cuda

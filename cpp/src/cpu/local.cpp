// Locally connected filters (ops.h local_*): one GEMM per module, on the column matrix im2col
// wrote for a chunk of output rows. Module m's inputs are the col_rows x N block at column
// (m - m0) * N of that matrix (ld = modules in the chunk * N); its outputs are the filters x N
// block at column m * N of the output, rows OH*OW*N apart; its bank is w + m * F * col_rows.
// With at least as many modules as threads, modules run in parallel (each GEMM single-threaded);
// otherwise they run one after another and each GEMM uses the threads (cpu::gemm). Either way
// every element is the same single sum, so results do not depend on the thread count.
#include <omp.h>

#include <cstdint>

#include "cpu/cpu_ops.h"

namespace convnet::cpu {
namespace {

template <class Fn>
void for_each_module(const LocalModules& md, Fn fn) {
  if (md.count >= omp_get_max_threads() && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < md.count; ++j) fn(j);
  } else {
    for (int64_t j = 0; j < md.count; ++j) fn(j);
  }
}

}  // namespace

void local_forward(const float* cols, const float* w, const ConvGeometry& g, int oy0, int oy1,
                   float* y) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for_each_module(md, [&](int64_t j) {
    const int64_t m = md.first + j;
    gemm(false, false, g.filters, int(md.n), int(md.k), 1.f, w + m * md.bank, int(md.k),
         cols + j * md.n, int(md.ldcols), 0.f, y + m * md.n, int(md.ldy));
  });
}

void local_backward_data(const float* w, const float* dy, const ConvGeometry& g, int oy0, int oy1,
                         float* dcols) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for_each_module(md, [&](int64_t j) {
    const int64_t m = md.first + j;
    gemm(true, false, int(md.k), int(md.n), g.filters, 1.f, w + m * md.bank, int(md.k),
         dy + m * md.n, int(md.ldy), 0.f, dcols + j * md.n, int(md.ldcols));
  });
}

void local_backward_weights(const float* cols, const float* dy, const ConvGeometry& g, int oy0,
                            int oy1, float* dw) {
  const LocalModules md = local_modules(g, oy0, oy1);
  for_each_module(md, [&](int64_t j) {
    const int64_t m = md.first + j;
    gemm(false, true, g.filters, int(md.k), int(md.n), 1.f, dy + m * md.n, int(md.ldy),
         cols + j * md.n, int(md.ldcols), 0.f, dw + m * md.bank, int(md.k));
  });
}

}  // namespace convnet::cpu

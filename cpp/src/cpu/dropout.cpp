// CPU dropout (inverted): out = in * mask / (1 - rate), mask[i] = philox_uniform(seed, step, i) >= rate,
// i the element's index in the global batch (ops.h BatchShard).
// The mask is recomputed from (seed, step) rather than stored, so this one function is both the
// forward pass (on activations) and the backward pass (on gradients).
#include <algorithm>
#include <cstring>

#include "convnet/philox.h"
#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {

namespace {
// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 14;

// Philox blocks drawn side by side in one vectorised loop (each block gives 4 numbers).
constexpr int kGroup = 16, kSpan = 4 * kGroup;

// u[t] = philox_uniform(seed, step, 4 * b0 + t) for t in [0, kSpan): block b0 + t / 4, word t % 4,
// the same 24-bit conversion (the tests hold the two equal).
CONVNET_CPU_CLONES
void draw_group(uint64_t b0, uint64_t step, uint64_t seed, float* u) {
  uint32_t word[4][kGroup];
#pragma omp simd
  for (int j = 0; j < kGroup; ++j) {
    const uint64_t b = b0 + uint64_t(j);
    const Philox4 r = philox4x32_10(uint32_t(b), uint32_t(b >> 32), uint32_t(step),
                                    uint32_t(step >> 32), uint32_t(seed), uint32_t(seed >> 32));
    word[0][j] = r.v[0];
    word[1][j] = r.v[1];
    word[2][j] = r.v[2];
    word[3][j] = r.v[3];
  }
  for (int j = 0; j < kGroup; ++j)
    for (int k = 0; k < 4; ++k) u[4 * j + k] = float(word[k][j] >> 8) * (1.0f / 16777216.0f);
}

// keep ? v : 0, through the bit pattern. Written as a float select, GCC (under its default
// -ftrapping-math, without AVX-512 masking) branches around the multiply and the loop stays
// scalar.
inline float keep_or_zero(float v, bool keep) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  b &= 0u - uint32_t(keep);
  std::memcpy(&v, &b, sizeof v);
  return v;
}

}  // namespace

CONVNET_CPU_CLONES
void dropout_apply(const float* in, float* out, int64_t n, float rate, uint64_t seed,
                   uint64_t step, bool accumulate, int64_t cols, int64_t global_cols, int64_t offset) {
  if (rate <= 0.f) {  // nothing dropped: a copy (or an add)
    if (accumulate) axpby(1.f, in, out, n, true);
    else copy(in, out, n);
    return;
  }
  // rate >= 1 drops everything: the products are then inf or NaN, but all masked to 0.
  const float scale = 1.f / (1.f - rate);
  auto apply = [&](const float* src, float* dst, const float* u, int cnt) {
    if (accumulate) {
      for (int t = 0; t < cnt; ++t) dst[t] += keep_or_zero(src[t] * scale, u[t] >= rate);
    } else {
      for (int t = 0; t < cnt; ++t) dst[t] = keep_or_zero(src[t] * scale, u[t] >= rate);
    }
  };
  if (cols <= 0 || (global_cols == cols && offset == 0)) {
    // The whole batch: element i draws counter i. Drawing a group of Philox blocks at once
    // vectorises; philox_uniform per element would make four calls per block, one lane at a time.
    const int64_t groups = (n + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t g = 0; g < groups; ++g) {
      float u[kSpan];
      draw_group(uint64_t(g) * kGroup, step, seed, u);
      const int64_t i0 = g * kSpan;
      apply(in + i0, out + i0, u, int(std::min<int64_t>(kSpan, n - i0)));
    }
    return;
  }
  // A shard of a global batch: row r's counters start at r * global_cols + offset, anywhere in a
  // Philox block, so each run of a row takes the group that holds its first counter.
  const int64_t rows = n / cols;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    float u[kSpan];
    for (int64_t c = 0; c < cols;) {
      const uint64_t counter = uint64_t(r * global_cols + offset + c), b0 = counter / 4;
      draw_group(b0, step, seed, u);
      const int skip = int(counter - 4 * b0);
      const int cnt = int(std::min<int64_t>(kSpan - skip, cols - c));
      apply(in + r * cols + c, out + r * cols + c, u + skip, cnt);
      c += cnt;
    }
  }
}

}  // namespace convnet::cpu

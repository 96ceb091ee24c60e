// CPU neurons (activation functions) and biases: the fused bias + neuron forward, the neuron
// forward alone, the neuron backward written through the output y = f(x), and the bias gradient.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/simd_dispatch.h"

namespace convnet::cpu {

namespace {

// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Elements per work item of the bias + neuron forward, so a few huge rows still split across
// threads while the inner loop stays contiguous.
constexpr int64_t kChunk = 1 << 14;

// c ? a : b through the bit patterns. Written as a float select, GCC (under its default
// -ftrapping-math, without AVX-512 masking) turns it into a branch and the loop stays scalar.
inline float select(bool c, float a, float b) {
  uint32_t ab, bb;
  std::memcpy(&ab, &a, sizeof ab);
  std::memcpy(&bb, &b, sizeof bb);
  const uint32_t m = 0u - uint32_t(c);
  const uint32_t rb = (ab & m) | (bb & ~m);
  float r;
  std::memcpy(&r, &rb, sizeof r);
  return r;
}

// e^x without a libm call, so loops over it vectorise (std::exp does not, short of -ffast-math).
// Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial, 2^n through
// the exponent bits; about 1 ulp. x is clamped to [-87.3, 88.3] so 2^n stays a normal float:
// the result saturates near 1e-38 / 2e38 instead of reaching 0 / inf, which the callers below
// absorb (1 / (1 + 2e38) ~ 0). NaN propagates.
inline float exp_fast(float x) {
  x = select(x < -87.3f, -87.3f, x);
  x = select(x > 88.3f, 88.3f, x);
  // n = round(x / ln2) by adding 1.5 * 2^23: the integer lands in the low mantissa bits, so
  // no float-to-int conversion is needed; n in [-126, 127].
  const float shifter = 12582912.f;
  const float t = x * 1.44269504088896341f + shifter;
  const float nf = t - shifter;
  uint32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int n = int(tb) - 0x4B400000;
  const float r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;  // ln2 split in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const uint32_t bits = uint32_t(n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// The neuron functions, one functor each so the loops below inline them (and vectorise the
// ones without a libm call). Backward functors take (y, dy) and return dy * f'(x) via y.
struct Linear {
  float f(float x) const { return x; }
  float df(float, float dy) const { return dy; }
};
struct Relu {
  float f(float x) const { return x > 0.f ? x : 0.f; }
  float df(float y, float dy) const { return y > 0.f ? dy : 0.f; }
};
struct LeakyRelu {
  float slope;
  float f(float x) const { return x > 0.f ? x : slope * x; }
  float df(float y, float dy) const { return y > 0.f ? dy : slope * dy; }
};
struct Tanh {
  // Cephes' tanhf: an odd polynomial for |x| < 0.625, where 1 - 2 / (e^2x + 1) would cancel,
  // and that formula beyond. Both sides are computed and one is selected, so it vectorises.
  float f(float x) const {
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = x + x * z * p;
    const float ax = std::fabs(x);
    const float big = std::copysign(1.f - 2.f / (exp_fast(2.f * ax) + 1.f), x);
    return select(ax < 0.625f, small, big);
  }
  float df(float y, float dy) const { return dy * (1.f - y * y); }
};
struct Logistic {
  // 1 / (1 + e^-x); for very negative x e^-x saturates at ~2e38, giving ~0 as it should.
  float f(float x) const { return 1.f / (1.f + exp_fast(-x)); }
  float df(float y, float dy) const { return dy * y * (1.f - y); }
};
struct Softsign {
  // y = x / (1 + |x|)  =>  1 + |x| = 1 / (1 - |y|)  =>  f'(x) = 1 / (1 + |x|)^2 = (1 - |y|)^2.
  float f(float x) const { return x / (1.f + std::fabs(x)); }
  float df(float y, float dy) const {
    float t = 1.f - std::fabs(y);
    return dy * t * t;
  }
};

// Calls fn with the functor for the neuron's type.
template <class Fn>
void with_neuron(const Neuron& nr, Fn&& fn) {
  switch (nr.type) {
    case NeuronType::Linear: fn(Linear{}); return;
    case NeuronType::Relu: fn(Relu{}); return;
    case NeuronType::LeakyRelu: fn(LeakyRelu{nr.slope}); return;
    case NeuronType::Tanh: fn(Tanh{}); return;
    case NeuronType::Logistic: fn(Logistic{}); return;
    case NeuronType::Softsign: fn(Softsign{}); return;
  }
}

// The loops, as templates on the functor: plain function arguments (not lambda captures) let
// the compiler keep the pointers in registers and vectorise.
template <class F>
CONVNET_CPU_CLONES
void bias_neuron_loop(float* y, const float* bias, int rows, int64_t inner, F f) {
  const int64_t chunks = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for collapse(2) schedule(static) if (int64_t(rows) * inner >= kParallelMin)
  for (int r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < chunks; ++c) {
      const float b = bias ? bias[r] : 0.f;
      float* row = y + int64_t(r) * inner;
      const int64_t j0 = c * kChunk, j1 = std::min(inner, j0 + kChunk);
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) row[j] = f.f(row[j] + b);
    }
  }
}

template <class F>
CONVNET_CPU_CLONES
void forward_loop(const float* x, float* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = f.f(x[i]);
}

template <class F>
CONVNET_CPU_CLONES
void backward_loop(const float* y, const float* dy, float* dx, int64_t n, bool accumulate, F f) {
  if (accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dx[i] += f.df(y[i], dy[i]);
  } else {
    // dx may alias dy (in-place backward): each element is read before it is written.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dx[i] = f.df(y[i], dy[i]);
  }
}

}  // namespace

void bias_neuron_forward(float* y, const float* bias, int rows, int64_t inner, const Neuron& nr) {
  if (!bias && nr.type == NeuronType::Linear) return;  // identity
  with_neuron(nr, [&](auto f) { bias_neuron_loop(y, bias, rows, inner, f); });
}

void neuron_forward(const float* x, float* y, int64_t n, const Neuron& nr) {
  if (nr.type == NeuronType::Linear) {
    copy(x, y, n);  // a no-op when in place
    return;
  }
  with_neuron(nr, [&](auto f) { forward_loop(x, y, n, f); });
}

void neuron_backward(const float* y, const float* dy, float* dx, int64_t n, const Neuron& nr,
                     bool accumulate) {
  with_neuron(nr, [&](auto f) { backward_loop(y, dy, dx, n, accumulate, f); });
}

CONVNET_CPU_CLONES
void bias_backward(const float* dy, float* db, int rows, int64_t inner, bool accumulate) {
  // One row per iteration, summed in a fixed order: the result does not depend on the thread
  // count. The sum runs in double: a row can hold 55*55*128 elements.
#pragma omp parallel for schedule(static) if (int64_t(rows) * inner >= kParallelMin)
  for (int r = 0; r < rows; ++r) {
    const float* row = dy + int64_t(r) * inner;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < inner; ++j) s += row[j];
    db[r] = accumulate ? db[r] + float(s) : float(s);
  }
}

}  // namespace convnet::cpu

// The CUDA backend against the CPU backend: every primitive of convnet/ops.h on fresh random
// inputs (never zeros), with outputs poisoned first (NaN) so that an element a kernel forgets to
// write fails, and every backward op both overwriting (dx pre-filled with NaN) and accumulating
// (dx pre-filled with random values). Then whole nets: the test DAG and AlexNet-2012 on a GPU
// against the CPU, two towers on two GPUs, the caching allocator's steady state, and TF32 mode.
//
// Every test skips, saying so, where no CUDA device is visible (or the build has no CUDA backend);
// they run on a lent GPU machine. GEMM runs in strict fp32 (convnet::cuda::MathMode::Fp32) unless
// a test says otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "convnet/data.h"
#include "convnet/device.h"
#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/ops.h"
#include "convnet/philox.h"
#include "convnet/solver.h"
#include "convnet/spec.h"
#include "convnet/tensor.h"
#include "convnet/trace.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif
#include "test_util.h"

#ifdef CONVNET_CUDA_EMULATION
#include <cuda_runtime.h>  // cuda_emu::host_waits
#else
#include <dlfcn.h>
#endif

namespace convnet::testing {
namespace {

// ---- skipping without a GPU ----

bool have_gpu() { return cuda_device_count() > 0; }

std::string no_gpu_reason() {
  return cuda_compiled() ? "cuda_device_count() == 0 (no driver or no GPU visible)"
                         : "this build has no CUDA backend (nvcc was not found)";
}

// At the top of every test: skip, saying why, when there is no GPU to test.
#define CONVNET_REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: " << no_gpu_reason()

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// GEMM runs in strict fp32 for the comparisons; restores the previous mode when done.
class Fp32Gemm {
 public:
  explicit Fp32Gemm(int device = 0) : device_(device) {
#ifdef CONVNET_WITH_CUDA
    saved_ = cuda::math_mode(device_);
    cuda::set_math_mode(device_, cuda::MathMode::Fp32);
#endif
  }
  ~Fp32Gemm() {
#ifdef CONVNET_WITH_CUDA
    cuda::set_math_mode(device_, saved_);
#endif
  }
  Fp32Gemm(const Fp32Gemm&) = delete;
  Fp32Gemm& operator=(const Fp32Gemm&) = delete;

 private:
  int device_;
#ifdef CONVNET_WITH_CUDA
  cuda::MathMode saved_ = cuda::MathMode::Fp32;
#endif
};

// ---- tensors ----

Device gpu() { return Device::cuda(0); }

Tensor make(const Shape& shape, const Device& device, const std::vector<float>& values) {
  Tensor t(shape, device);
  EXPECT_EQ(size_t(t.numel()), values.size());
  t.copy_from_host(values.data());
  return t;
}

// NaN everywhere, written from the host so the poison does not depend on a CUDA kernel.
Tensor poisoned(const Shape& shape, const Device& device) {
  Tensor t(shape, device);
  std::vector<float> nan(size_t(t.numel()), kNaN);
  t.copy_from_host(nan.data());
  return t;
}

// The same values on the CPU and on the GPU.
struct Pair {
  Tensor cpu, gpu;
};

Pair pair_of(const Shape& shape, const std::vector<float>& values) {
  return {make(shape, Device::cpu(), values), make(shape, gpu(), values)};
}
Pair random_pair(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return pair_of(shape, random_vector(size_t(shape_numel(shape)), seed, lo, hi));
}
// CPU output poisoned too (the CPU backend is tested elsewhere; this keeps the two symmetric).
Pair poisoned_pair(const Shape& shape) {
  return {poisoned(shape, Device::cpu()), poisoned(shape, gpu())};
}
// An output for a backward op: NaN (overwrite) or random values (accumulate).
Pair grad_out_pair(const Shape& shape, bool accumulate, uint32_t seed) {
  return accumulate ? random_pair(shape, seed) : poisoned_pair(shape);
}

std::string str(const Shape& s) { return shape_str(s); }

// ---- comparisons ----

// |got - want| <= atol + rtol * |want| everywhere; NaN or inf in `got` always fails. Reports how
// many elements differ, the first few, and the largest errors.
::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<float>& want,
                                     double rtol, double atol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  int64_t bad = 0;
  double max_abs = 0, max_rel = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const double err = std::fabs(g - w);
    const bool ok = err <= atol + rtol * std::fabs(w);  // false for NaN
    if (std::isfinite(err)) {
      max_abs = std::max(max_abs, err);
      if (w != 0) max_rel = std::max(max_rel, err / std::fabs(w));
    }
    if (!ok) {
      if (bad < 5) first << "\n  [" << i << "] got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " elements differ (rtol " << rtol << ", atol " << atol
         << "; largest finite errors: abs " << max_abs << ", rel " << max_rel << "):" << first.str();
}

::testing::AssertionResult all_close(const Tensor& got, const Tensor& want, double rtol,
                                     double atol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << str(got.shape()) << " vs "
                                         << str(want.shape());
  return all_close(got.to_vector(), want.to_vector(), rtol, atol);
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// ||a - b|| / ||b|| in float64; infinity when `a` holds a NaN or inf.
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return num == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

// ================================================================================================
// GEMM: every transpose, beta 0 (C poisoned, must not be read) and 1, leading dimensions wider
// than the matrices (the padding must stay untouched), and thin, tall, and long-k shapes.
// ================================================================================================

struct GemmCase {
  int m, n, k;
  bool ta, tb;
  float alpha, beta;
};

std::string gemm_name(const ::testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  std::ostringstream os;
  os << "m" << c.m << "n" << c.n << "k" << c.k << "_" << (c.ta ? 'T' : 'N') << (c.tb ? 'T' : 'N')
     << "_beta" << int(c.beta) << "_" << info.index;
  return os.str();
}

std::vector<GemmCase> gemm_cases() {
  struct Mnk {
    int m, n, k;
  };
  const std::vector<Mnk> shapes = {
      {7, 9, 5},       // tiny
      {1, 37, 129},    // one row (a batch-1 fc layer)
      {129, 1, 77},    // one column
      {64, 300, 257},  // odd k
      {33, 17, 4099},  // long reduction (a weight gradient)
      {96, 3025, 363}  // conv1: 96 filters x 55*55 outputs, k = 3*11*11
  };
  std::vector<GemmCase> out;
  for (const Mnk& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.f, 1.f})
          out.push_back({s.m, s.n, s.k, ta, tb, beta == 0.f ? 1.f : -0.75f, beta});
  return out;
}

class CudaGemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaGemm, MatchesCpu) {
  CONVNET_REQUIRE_GPU();
  Fp32Gemm fp32;
  const GemmCase c = GetParam();
  const int a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
  const int b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const int lda = a_cols + 3, ldb = b_cols + 5, ldc = c.n + 7;
  const Shape a_shape = {a_rows, lda}, b_shape = {b_rows, ldb}, c_shape = {c.m, ldc};
  Pair a = random_pair(a_shape, 11), b = random_pair(b_shape, 12);
  const auto c0 = random_vector(size_t(c.m) * ldc, 13);
  // beta = 0: C is not an input. The GPU's C is NaN (BLAS must not read it); the CPU's random.
  Tensor c_cpu = make(c_shape, Device::cpu(), c0);
  Tensor c_gpu = c.beta == 0.f ? poisoned(c_shape, gpu()) : make(c_shape, gpu(), c0);
  const Tensor c_before = make(c_shape, Device::cpu(), c_gpu.to_vector());

  gemm(c.ta, c.tb, c.alpha, matrix(a.cpu, 0, a_rows, a_cols, lda),
       matrix(b.cpu, 0, b_rows, b_cols, ldb), c.beta, matrix(c_cpu, 0, c.m, c.n, ldc));
  gemm(c.ta, c.tb, c.alpha, matrix(a.gpu, 0, a_rows, a_cols, lda),
       matrix(b.gpu, 0, b_rows, b_cols, ldb), c.beta, matrix(c_gpu, 0, c.m, c.n, ldc));

  const auto want_full = c_cpu.to_vector(), got_full = c_gpu.to_vector();
  const auto before = c_before.to_vector();
  std::vector<float> got, want;
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      got.push_back(got_full[size_t(i) * ldc + j]);
      want.push_back(want_full[size_t(i) * ldc + j]);
    }
  // fp32 dot products of length k: error grows about like k * eps * |terms|.
  const double atol = 1e-6 + 2e-7 * c.k * (std::fabs(c.alpha) + 1.0);
  EXPECT_TRUE(all_close(got, want, 1e-4, atol)) << "gemm C";
  // The padding between rows of C is never touched (bitwise: NaN stays NaN).
  for (int i = 0; i < c.m; ++i)
    for (int j = c.n; j < ldc; ++j) {
      const size_t idx = size_t(i) * ldc + j;
      ASSERT_EQ(0, std::memcmp(&got_full[idx], &before[idx], sizeof(float)))
          << "padding of C written at row " << i << " column " << j;
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemm, ::testing::ValuesIn(gemm_cases()), gemm_name);

TEST(CudaGemmMath, Tf32IsCloseToFp32) {
  CONVNET_REQUIRE_GPU();
#ifdef CONVNET_WITH_CUDA
  Fp32Gemm restore;  // puts fp32 back at the end
  const int m = 256, n = 384, k = 1024;
  Pair a = random_pair({m, k}, 21), b = random_pair({k, n}, 22);
  Tensor c32 = poisoned({m, n}, gpu()), c_tf = poisoned({m, n}, gpu());
  cuda::set_math_mode(0, cuda::MathMode::Fp32);
  gemm(false, false, 1.f, matrix(a.gpu, m, k), matrix(b.gpu, k, n), 0.f, matrix(c32, m, n));
  cuda::set_math_mode(0, cuda::MathMode::Tf32);
  EXPECT_EQ(cuda::math_mode(0), cuda::MathMode::Tf32);
  gemm(false, false, 1.f, matrix(a.gpu, m, k), matrix(b.gpu, k, n), 0.f, matrix(c_tf, m, n));
  // TF32 keeps 10 mantissa bits of the inputs: about 1e-3 relative per product.
  const double err = rel_error(c_tf.to_vector(), c32.to_vector());
  EXPECT_LT(err, 1e-2) << "tf32 GEMM too far from fp32";
#endif
}

// ================================================================================================
// im2col / col2im: odd and non-square sizes, stride 1 to 4 (also stride > size), padding (also
// padding that leaves whole windows outside the image), groups with their channel offsets c0,
// and chunks of output rows [oy0, oy1).
// ================================================================================================

struct ConvCase {
  int c, h, w, n, size, stride, pad, groups;
};

ConvGeometry conv_geometry(const ConvCase& t) {
  ConvGeometry g;
  g.channels = t.c;
  g.height = t.h;
  g.width = t.w;
  g.batch = t.n;
  g.filters = 2 * t.groups;
  g.size = t.size;
  g.stride = t.stride;
  g.pad = t.pad;
  g.groups = t.groups;
  g.finish("test");
  return g;
}

std::string conv_name(const ConvCase& t) {
  std::ostringstream os;
  os << "C" << t.c << " H" << t.h << " W" << t.w << " N" << t.n << " k" << t.size << " s"
     << t.stride << " p" << t.pad << " groups " << t.groups;
  return os.str();
}

std::vector<ConvCase> conv_cases() {
  return {
      {3, 13, 13, 1, 3, 1, 1, 1},   // batch 1, same padding
      {4, 11, 9, 3, 5, 2, 2, 2},    // odd, non-square, two groups
      {3, 23, 23, 5, 11, 4, 2, 1},  // conv1-like: k11 s4 p2
      {6, 10, 7, 2, 3, 3, 0, 3},    // stride = size, three groups
      {2, 9, 8, 3, 2, 4, 1, 1},     // stride > size: gaps that no window covers
      {5, 6, 7, 7, 1, 1, 0, 1},     // 1x1
      {2, 5, 5, 3, 3, 2, 3, 2},     // padding > size - 1: windows wholly in the padding
      {4, 8, 12, 4, 4, 3, 1, 4},    // even filter, one channel per group
  };
}

// Output-row chunks to try: all rows, the first, the last, a middle band.
std::vector<std::pair<int, int>> row_chunks(int out_h) {
  std::vector<std::pair<int, int>> out = {{0, out_h}, {0, 1}, {out_h - 1, out_h}};
  if (out_h >= 4) out.push_back({1, out_h - 1});
  return out;
}

TEST(CudaIm2col, MatchesCpuExactly) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 100;
  for (const ConvCase& t : conv_cases()) {
    const ConvGeometry g = conv_geometry(t);
    Pair x = random_pair({g.channels, g.height, g.width, g.batch}, ++seed);
    for (int grp = 0; grp < g.groups; ++grp) {
      const int c0 = grp * g.group_channels();
      for (auto [oy0, oy1] : row_chunks(g.out_h)) {
        SCOPED_TRACE(conv_name(t) + " c0=" + std::to_string(c0) + " rows [" +
                     std::to_string(oy0) + ", " + std::to_string(oy1) + ")");
        const int64_t count = g.col_rows() * (oy1 - oy0) * g.out_w * g.batch;
        Pair cols = poisoned_pair({int(count)});
        im2col(x.cpu, g, c0, oy0, oy1, cols.cpu);
        im2col(x.gpu, g, c0, oy0, oy1, cols.gpu);
        EXPECT_TRUE(all_close(cols.gpu, cols.cpu, 0, 0)) << "im2col is a copy: exact";
      }
    }
  }
}

TEST(CudaCol2im, MatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 200;
  for (const ConvCase& t : conv_cases()) {
    const ConvGeometry g = conv_geometry(t);
    const Shape xs = {g.channels, g.height, g.width, g.batch};
    for (int grp = 0; grp < g.groups; ++grp) {
      const int c0 = grp * g.group_channels();
      for (auto [oy0, oy1] : row_chunks(g.out_h)) {
        SCOPED_TRACE(conv_name(t) + " c0=" + std::to_string(c0) + " rows [" +
                     std::to_string(oy0) + ", " + std::to_string(oy1) + ")");
        const int64_t count = g.col_rows() * (oy1 - oy0) * g.out_w * g.batch;
        Pair cols = random_pair({int(count)}, ++seed);
        // col2im adds into dx: start from random values (other groups' channels must keep theirs).
        Pair dx = random_pair(xs, ++seed);
        col2im(cols.cpu, g, c0, oy0, oy1, dx.cpu);
        col2im(cols.gpu, g, c0, oy0, oy1, dx.gpu);
        // Each element sums at most ceil(size/stride)^2 entries, in any order.
        EXPECT_TRUE(all_close(dx.gpu, dx.cpu, 1e-5, 1e-6));
      }
    }
  }
}

// ================================================================================================
// Neurons and biases, every neuron type.
// ================================================================================================

std::vector<Neuron> all_neurons() {
  std::vector<Neuron> out;
  for (NeuronType t : {NeuronType::Linear, NeuronType::Relu, NeuronType::LeakyRelu,
                       NeuronType::Tanh, NeuronType::Logistic, NeuronType::Softsign}) {
    Neuron n;
    n.type = t;
    if (t == NeuronType::LeakyRelu) n.slope = 0.1f;
    out.push_back(n);
  }
  return out;
}

// Activation shapes: odd batches, batch 1, one channel, and one big enough for many blocks.
std::vector<Shape> neuron_shapes() {
  return {{5, 7, 3, 3}, {3, 4, 4, 1}, {1, 9, 9, 7}, {17, 9, 11, 33}, {96, 13, 13, 129}};
}

// Inputs spread over [-4, 4] so every neuron sees its linear and saturated parts.
constexpr float kXRange = 4.f;

TEST(CudaNeuron, BiasNeuronForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 300;
  for (const Neuron& nr : all_neurons())
    for (const Shape& s : neuron_shapes())
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE(nr.name() + " " + str(s) + (with_bias ? " with bias" : " no bias"));
        Pair y = random_pair(s, ++seed, -kXRange, kXRange);
        Pair b = random_pair({s[0]}, ++seed);
        bias_neuron_forward(y.cpu, with_bias ? b.cpu : Tensor(), nr);
        bias_neuron_forward(y.gpu, with_bias ? b.gpu : Tensor(), nr);
        EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-6));
      }
}

TEST(CudaNeuron, ForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 400;
  for (const Neuron& nr : all_neurons())
    for (const Shape& s : neuron_shapes()) {
      SCOPED_TRACE(nr.name() + " " + str(s));
      Pair x = random_pair(s, ++seed, -kXRange, kXRange);
      Pair y = poisoned_pair(s);
      neuron_forward(x.cpu, y.cpu, nr);
      neuron_forward(x.gpu, y.gpu, nr);
      EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-6));
      // The input is left alone.
      EXPECT_TRUE(all_close(x.gpu, x.cpu, 0, 0)) << "neuron_forward wrote its input";
    }
}

TEST(CudaNeuron, BackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 500;
  for (const Neuron& nr : all_neurons())
    for (const Shape& s : neuron_shapes())
      for (bool acc : {false, true}) {
        SCOPED_TRACE(nr.name() + " " + str(s) + (acc ? " accumulate" : " overwrite"));
        // y = f(x) from the CPU, the same on both sides.
        Tensor x = make(s, Device::cpu(), random_vector(size_t(shape_numel(s)), ++seed, -kXRange, kXRange));
        Tensor y_host(s, Device::cpu());
        neuron_forward(x, y_host, nr);
        Pair y = pair_of(s, y_host.to_vector());
        Pair dy = random_pair(s, ++seed);
        Pair dx = grad_out_pair(s, acc, ++seed);
        neuron_backward(y.cpu, dy.cpu, dx.cpu, nr, acc);
        neuron_backward(y.gpu, dy.gpu, dx.gpu, nr, acc);
        EXPECT_TRUE(all_close(dx.gpu, dx.cpu, 1e-5, 1e-6));
      }
}

TEST(CudaNeuron, BiasBackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 600;
  std::vector<Shape> shapes = neuron_shapes();
  shapes.push_back({3, 55, 55, 16});  // long rows: 48400 elements per bias
  shapes.push_back({1000, 1, 1, 1});  // an fc layer at batch 1: one element per bias
  for (const Shape& s : shapes)
    for (bool acc : {false, true}) {
      SCOPED_TRACE(str(s) + (acc ? " accumulate" : " overwrite"));
      Pair dy = random_pair(s, ++seed);
      Pair db = grad_out_pair({s[0]}, acc, ++seed);
      bias_backward(dy.cpu, db.cpu, acc);
      bias_backward(dy.gpu, db.gpu, acc);
      const double inner = double(shape_numel(s)) / s[0];
      EXPECT_TRUE(all_close(db.gpu, db.cpu, 1e-4, 1e-6 + 2e-7 * inner));
    }
}

// Ops on a channel slice (a view at an offset) write only that slice.
TEST(CudaNeuron, ChannelViewsTouchOnlyTheirChannels) {
  CONVNET_REQUIRE_GPU();
  const Shape s = {9, 5, 7, 3};
  Neuron relu;
  relu.type = NeuronType::Relu;
  Pair whole = random_pair(s, 650, -2.f, 2.f);
  Pair bias = random_pair({4}, 651);
  Tensor vc = whole.cpu.channels(3, 4), vg = whole.gpu.channels(3, 4);
  bias_neuron_forward(vc, bias.cpu, relu);
  bias_neuron_forward(vg, bias.gpu, relu);
  // The backward writes channels 5-8, over two of the forward's. Its y is a tensor of its own:
  // were it the forward's view, dx would overwrite y elements that other threads still read (a
  // race on a GPU, and a different result for each thread order under cuda_emu).
  Pair y = random_pair({4, 5, 7, 3}, 653, -2.f, 2.f), dy = random_pair({4, 5, 7, 3}, 652);
  Tensor dc = whole.cpu.channels(5, 4), dg = whole.gpu.channels(5, 4);
  neuron_backward(y.cpu, dy.cpu, dc, relu, true);
  neuron_backward(y.gpu, dy.gpu, dg, relu, true);
  EXPECT_TRUE(all_close(whole.gpu, whole.cpu, 1e-5, 1e-6));
}

// ================================================================================================
// LRN forward and backward: AlexNet's parameters, a strong alpha so the normalisation matters,
// an even size, and fewer channels than the window.
// ================================================================================================

struct LrnCase {
  Shape shape;
  LrnParams p;
  float x_range;
};

std::vector<LrnCase> lrn_cases() {
  LrnParams alexnet;  // size 5, k 2, alpha 1e-4, beta 0.75
  LrnParams strong{5, 1.f, 0.5f, 0.75f};
  LrnParams even{4, 1.5f, 0.3f, 0.6f};
  LrnParams wide{7, 1.f, 0.2f, 0.75f};
  LrnParams one{1, 1.f, 1.f, 0.5f};
  return {
      {{96, 5, 5, 3}, alexnet, 20.f},  // AlexNet's alpha needs large inputs to matter
      {{16, 7, 5, 1}, strong, 2.f},    // batch 1
      {{12, 3, 4, 5}, even, 2.f},      // even size: window [i - 2, i + 1]
      {{3, 4, 4, 7}, wide, 2.f},       // C < size: every window clipped on both sides
      {{1, 6, 6, 3}, strong, 2.f},     // one channel
      {{8, 5, 3, 3}, one, 2.f},        // size 1
      {{48, 11, 11, 33}, strong, 2.f}, // many blocks
  };
}

std::string lrn_name(const LrnCase& t) {
  std::ostringstream os;
  os << str(t.shape) << " size " << t.p.size << " k " << t.p.k << " alpha " << t.p.alpha
     << " beta " << t.p.beta;
  return os.str();
}

TEST(CudaLrn, ForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 700;
  for (const LrnCase& t : lrn_cases()) {
    SCOPED_TRACE(lrn_name(t));
    Pair x = random_pair(t.shape, ++seed, -t.x_range, t.x_range);
    Pair y = poisoned_pair(t.shape), denom = poisoned_pair(t.shape);
    lrn_forward(x.cpu, y.cpu, denom.cpu, t.p);
    lrn_forward(x.gpu, y.gpu, denom.gpu, t.p);
    EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-6)) << "y";
    EXPECT_TRUE(all_close(denom.gpu, denom.cpu, 1e-5, 1e-6)) << "denom";
  }
}

TEST(CudaLrn, BackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 800;
  for (const LrnCase& t : lrn_cases())
    for (bool acc : {false, true}) {
      SCOPED_TRACE(lrn_name(t) + (acc ? " accumulate" : " overwrite"));
      const auto xv = random_vector(size_t(shape_numel(t.shape)), ++seed, -t.x_range, t.x_range);
      Tensor xh = make(t.shape, Device::cpu(), xv), yh(t.shape, Device::cpu()),
             dh(t.shape, Device::cpu());
      lrn_forward(xh, yh, dh, t.p);
      Pair x = pair_of(t.shape, xv), y = pair_of(t.shape, yh.to_vector()),
           denom = pair_of(t.shape, dh.to_vector());
      Pair dy = random_pair(t.shape, ++seed);
      Pair dx = grad_out_pair(t.shape, acc, ++seed);
      lrn_backward(x.cpu, y.cpu, denom.cpu, dy.cpu, dx.cpu, t.p, acc);
      lrn_backward(x.gpu, y.gpu, denom.gpu, dy.gpu, dx.gpu, t.p, acc);
      // dx is a difference of two terms (cancellation): the tolerance scales with |dx|.
      const auto want = dx.cpu.to_vector();
      EXPECT_TRUE(all_close(dx.gpu.to_vector(), want, 1e-4, 1e-5 * max_abs(want)));
    }
}

// ================================================================================================
// Same-map response normalisation (rnorm): odd and even windows, windows wider than the image,
// a non-square image, batch 1, and a batch that is no multiple of a warp.
// ================================================================================================

struct RnormCase {
  Shape shape;
  RnormParams p;
  float x_range;
};

std::vector<RnormCase> rnorm_cases() {
  const RnormParams cifar{3, 1.f, 0.001f / 9, 0.75f};  // cuda-convnet2's CIFAR-10 rnorm1
  const RnormParams strong{5, 1.f, 0.05f, 0.75f};
  const RnormParams even{4, 1.5f, 0.1f, 0.6f};
  const RnormParams two{2, 2.f, 0.3f, 1.0f};
  const RnormParams half{3, 1.f, 0.2f, 0.5f};
  return {
      {{32, 8, 8, 33}, cifar, 20.f},  // a tiny alpha needs large inputs to matter
      {{4, 7, 5, 1}, strong, 2.f},    // batch 1, non-square
      {{3, 6, 6, 7}, even, 2.f},      // even size: window [q - 2, q + 1]
      {{2, 3, 4, 5}, two, 2.f},       // size 2
      {{5, 2, 3, 9}, strong, 2.f},    // window wider than the image: clipped on both sides
      {{6, 9, 9, 16}, half, 2.f},
  };
}

std::string rnorm_name(const RnormCase& t) {
  std::ostringstream os;
  os << str(t.shape) << " size " << t.p.size << " k " << t.p.k << " alpha " << t.p.alpha
     << " beta " << t.p.beta;
  return os.str();
}

TEST(CudaRnorm, ForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 7700;
  for (const RnormCase& t : rnorm_cases()) {
    SCOPED_TRACE(rnorm_name(t));
    Pair x = random_pair(t.shape, ++seed, -t.x_range, t.x_range);
    Pair y = poisoned_pair(t.shape), denom = poisoned_pair(t.shape);
    rnorm_forward(x.cpu, y.cpu, denom.cpu, t.p);
    rnorm_forward(x.gpu, y.gpu, denom.gpu, t.p);
    EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-6)) << "y";
    EXPECT_TRUE(all_close(denom.gpu, denom.cpu, 1e-5, 1e-6)) << "denom";
  }
}

TEST(CudaRnorm, BackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 7800;
  for (const RnormCase& t : rnorm_cases())
    for (bool acc : {false, true}) {
      SCOPED_TRACE(rnorm_name(t) + (acc ? " accumulate" : " overwrite"));
      const auto xv = random_vector(size_t(shape_numel(t.shape)), ++seed, -t.x_range, t.x_range);
      Tensor xh = make(t.shape, Device::cpu(), xv), yh(t.shape, Device::cpu()),
             dh(t.shape, Device::cpu());
      rnorm_forward(xh, yh, dh, t.p);
      Pair x = pair_of(t.shape, xv), y = pair_of(t.shape, yh.to_vector()),
           denom = pair_of(t.shape, dh.to_vector());
      Pair dy = random_pair(t.shape, ++seed);
      Pair dx = grad_out_pair(t.shape, acc, ++seed);
      rnorm_backward(x.cpu, y.cpu, denom.cpu, dy.cpu, dx.cpu, t.p, acc);
      rnorm_backward(x.gpu, y.gpu, denom.gpu, dy.gpu, dx.gpu, t.p, acc);
      // dx is a difference of two terms (cancellation): the tolerance scales with |dx|.
      const auto want = dx.cpu.to_vector();
      EXPECT_TRUE(all_close(dx.gpu.to_vector(), want, 1e-4, 1e-5 * max_abs(want)));
    }
}

// ================================================================================================
// Locally connected filters: the three per-module GEMM ops on the same im2col columns, for whole
// outputs and for a chunk of rows in the middle (module offsets), ceil mode, stride and padding.
// ================================================================================================

struct LocalOpCase {
  int c, h, w, n, filters, size, stride, pad;
  bool ceil;
  int oy0, oy1;  // the chunk of output rows (oy1 = -1: to the end)
};

TEST(CudaLocal, OpsMatchCpu) {
  CONVNET_REQUIRE_GPU();
  Fp32Gemm fp32;
  const std::vector<LocalOpCase> cases = {
      {64, 6, 6, 16, 64, 3, 1, 1, false, 0, -1},  // CIFAR-10 local3's shape, smaller batch
      {3, 7, 5, 5, 4, 3, 2, 0, true, 1, 3},       // ceil, a middle chunk
      {2, 5, 5, 1, 3, 1, 1, 0, false, 2, 4},      // 1x1, batch 1
      {5, 9, 8, 3, 2, 4, 3, 2, false, 0, 2},
  };
  uint32_t seed = 7900;
  for (const LocalOpCase& t : cases) {
    ConvGeometry g;
    g.channels = t.c, g.height = t.h, g.width = t.w, g.batch = t.n;
    g.filters = t.filters, g.size = t.size, g.stride = t.stride, g.pad = t.pad, g.ceil_mode = t.ceil;
    g.finish("test");
    const int oy0 = t.oy0, oy1 = t.oy1 < 0 ? g.out_h : t.oy1;
    SCOPED_TRACE("input " + str({t.c, t.h, t.w, t.n}) + " filters " + std::to_string(t.filters) +
                 " size " + std::to_string(t.size) + " stride " + std::to_string(t.stride) +
                 " pad " + std::to_string(t.pad) + (t.ceil ? " ceil" : "") + " rows [" +
                 std::to_string(oy0) + ", " + std::to_string(oy1) + ")");
    const Shape xs{t.c, t.h, t.w, t.n}, ys{t.filters, g.out_h, g.out_w, t.n};
    const Shape ws{int(g.out_pixels()), t.filters, t.c, t.size, t.size};
    const Shape cs{int(im2col_floats(g, oy0, oy1))};
    Pair x = random_pair(xs, ++seed), w = random_pair(ws, ++seed, -0.5f, 0.5f);
    Pair cols = poisoned_pair(cs);
    im2col(x.cpu, g, 0, oy0, oy1, cols.cpu);
    im2col(x.gpu, g, 0, oy0, oy1, cols.gpu);
    // Forward: only the chunk's modules are written; the rest of y keeps its (random) values.
    Pair y = random_pair(ys, ++seed);
    local_forward(cols.cpu, w.cpu, g, oy0, oy1, y.cpu);
    local_forward(cols.gpu, w.gpu, g, oy0, oy1, y.gpu);
    EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-5)) << "y";
    Pair dy = random_pair(ys, ++seed);
    Pair dcols = poisoned_pair(cs);
    local_backward_data(w.cpu, dy.cpu, g, oy0, oy1, dcols.cpu);
    local_backward_data(w.gpu, dy.gpu, g, oy0, oy1, dcols.gpu);
    EXPECT_TRUE(all_close(dcols.gpu, dcols.cpu, 1e-5, 1e-5)) << "dcols";
    Pair dw = random_pair(ws, ++seed);  // modules outside the chunk stay as they were
    local_backward_weights(cols.cpu, dy.cpu, g, oy0, oy1, dw.cpu);
    local_backward_weights(cols.gpu, dy.gpu, g, oy0, oy1, dw.gpu);
    EXPECT_TRUE(all_close(dw.gpu, dw.cpu, 1e-5, 1e-5)) << "dw";
  }
}

// ================================================================================================
// Pooling forward and backward: max and average, overlapping 3/2, ceil and floor, stride > size,
// batch 1, padding (both divisors), and max pooling with ties (the first maximum of the window
// takes the gradient).
// ================================================================================================

struct PoolCase {
  PoolType type;
  int c, h, w, n, size, stride;
  bool ceil_mode;
  int pad = 0;
  bool count_pad = true;
};

PoolGeometry pool_geometry(const PoolCase& t) {
  PoolGeometry g;
  g.type = t.type;
  g.channels = t.c;
  g.height = t.h;
  g.width = t.w;
  g.batch = t.n;
  g.size = t.size;
  g.stride = t.stride;
  g.ceil_mode = t.ceil_mode;
  g.padding = t.pad;
  g.count_padding = t.count_pad;
  g.finish("test");
  return g;
}

std::string pool_name(const PoolCase& t) {
  std::ostringstream os;
  os << (t.type == PoolType::Max ? "max" : "avg") << " C" << t.c << " H" << t.h << " W" << t.w
     << " N" << t.n << " size " << t.size << " stride " << t.stride
     << (t.ceil_mode ? " ceil" : " floor") << (t.pad ? " pad " + std::to_string(t.pad) : "")
     << (t.count_pad ? "" : " without padded cells");
  return os.str();
}

std::vector<PoolCase> pool_cases() {
  std::vector<PoolCase> out;
  for (PoolType type : {PoolType::Max, PoolType::Avg}) {
    const std::vector<PoolCase> shapes = {
        {type, 3, 7, 9, 4, 3, 2, false},    // overlapping 3/2
        {type, 2, 8, 6, 3, 3, 2, false},    // floor drops the last row and column
        {type, 2, 8, 6, 3, 3, 2, true},     // ceil keeps them, clipped
        {type, 2, 7, 7, 2, 3, 3, true},     // ceil: last window one row/column
        {type, 2, 5, 5, 1, 2, 2, true},     // batch 1, 1-element corner window
        {type, 2, 8, 7, 2, 2, 3, false},    // stride > size: gaps
        {type, 2, 8, 7, 3, 2, 3, true},
        {type, 2, 5, 4, 5, 3, 1, false},    // stride 1, heavy overlap
        {type, 3, 4, 4, 3, 4, 1, true},     // global pooling
        {type, 16, 27, 27, 5, 3, 2, false}, // AlexNet pool2 shape, small batch
        {type, 8, 55, 55, 33, 3, 2, false}, // AlexNet pool1 spatial size, odd batch
        {type, 2, 7, 7, 3, 3, 2, false, 1},         // padding 1
        {type, 2, 7, 7, 3, 3, 2, false, 1, false},  // average over the input's cells only
        {type, 2, 6, 5, 3, 3, 2, true, 1},          // ceil with padding
        {type, 2, 4, 4, 2, 4, 1, false, 2, false},  // padding size/2
    };
    out.insert(out.end(), shapes.begin(), shapes.end());
  }
  return out;
}

// Values for max pooling with ties: three distinct levels, so windows often hold several maxima.
std::vector<float> tied_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> level(1, 3);
  std::vector<float> v(n);
  for (auto& x : v) x = 0.25f * float(level(rng));
  return v;
}

TEST(CudaPool, ForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 900;
  for (const PoolCase& t : pool_cases())
    for (bool ties : {false, true}) {
      if (ties && t.type != PoolType::Max) continue;
      SCOPED_TRACE(pool_name(t) + (ties ? " with ties" : ""));
      const PoolGeometry g = pool_geometry(t);
      const Shape xs = {g.channels, g.height, g.width, g.batch};
      const Shape ys = {g.channels, g.out_h, g.out_w, g.batch};
      const size_t n = size_t(shape_numel(xs));
      Pair x = pair_of(xs, ties ? tied_values(n, ++seed) : random_vector(n, ++seed));
      Pair y = poisoned_pair(ys);
      pool_forward(x.cpu, y.cpu, g);
      pool_forward(x.gpu, y.gpu, g);
      if (t.type == PoolType::Max)
        EXPECT_TRUE(all_close(y.gpu, y.cpu, 0, 0)) << "max pooling is exact";
      else
        EXPECT_TRUE(all_close(y.gpu, y.cpu, 1e-5, 1e-6));
    }
}

TEST(CudaPool, BackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1000;
  for (const PoolCase& t : pool_cases())
    for (bool ties : {false, true})
      for (bool acc : {false, true}) {
        if (ties && t.type != PoolType::Max) continue;
        SCOPED_TRACE(pool_name(t) + (ties ? " with ties" : "") + (acc ? " accumulate" : " overwrite"));
        const PoolGeometry g = pool_geometry(t);
        const Shape xs = {g.channels, g.height, g.width, g.batch};
        const Shape ys = {g.channels, g.out_h, g.out_w, g.batch};
        const size_t n = size_t(shape_numel(xs));
        const auto xv = ties ? tied_values(n, ++seed) : random_vector(n, ++seed);
        Tensor xh = make(xs, Device::cpu(), xv), yh(ys, Device::cpu());
        pool_forward(xh, yh, g);
        Pair x = pair_of(xs, xv), y = pair_of(ys, yh.to_vector());
        Pair dy = random_pair(ys, ++seed);
        Pair dx = grad_out_pair(xs, acc, ++seed);
        pool_backward(x.cpu, y.cpu, dy.cpu, dx.cpu, g, acc);
        pool_backward(x.gpu, y.gpu, dy.gpu, dx.gpu, g, acc);
        // Overlapping windows sum a few terms, in any order.
        EXPECT_TRUE(all_close(dx.gpu, dx.cpu, 1e-5, 1e-6));
      }
}

// ================================================================================================
// LRN then pooling, backward in one kernel: against the CPU's two passes, and bit for bit against
// the GPU's own two kernels (the same arithmetic in the same order).
// ================================================================================================

// Raw bytes: +0 and -0 differ here.
bool same_bits(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

TEST(CudaLrnPool, BackwardMatchesCpuAndTheTwoKernels) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1100;
  std::vector<PoolCase> cases = pool_cases();
  // 40 channels: the kernel's threads walk 20 channels each, so its ring of 16 wraps and slides
  // (sizes up to 16); 17 takes the two kernels (40 channels do not fit the ring).
  cases.push_back({PoolType::Max, 40, 9, 9, 7, 3, 2, false});
  cases.push_back({PoolType::Avg, 40, 8, 7, 3, 3, 2, true});
  for (const PoolCase& t : cases)
    for (int lrn_size : {5, 4, 1, 15, 16, 17})
      for (bool acc : {false, true}) {
        // The AlexNet-sized cases keep to AlexNet's LRN; windows wider than the channels only
        // clip.
        if ((t.c > 8 && t.c != 40 && lrn_size != 5) || (t.c <= 8 && lrn_size > 5 && lrn_size != 17))
          continue;
        SCOPED_TRACE(pool_name(t) + " lrn size " + std::to_string(lrn_size) +
                     (acc ? " accumulate" : " overwrite"));
        const PoolGeometry g = pool_geometry(t);
        LrnParams lp;
        lp.size = lrn_size;
        lp.alpha = 0.5f;  // a visible second term
        const Shape xs = {g.channels, g.height, g.width, g.batch};
        const Shape ys = {g.channels, g.out_h, g.out_w, g.batch};
        const auto xv = random_vector(size_t(shape_numel(xs)), ++seed, -2.f, 2.f);
        Tensor xh = make(xs, Device::cpu(), xv), yh(xs, Device::cpu()), dh(xs, Device::cpu()),
               ph(ys, Device::cpu());
        lrn_forward(xh, yh, dh, lp);
        pool_forward(yh, ph, g);
        Pair x = pair_of(xs, xv), y = pair_of(xs, yh.to_vector()), denom = pair_of(xs, dh.to_vector()),
             pooled = pair_of(ys, ph.to_vector());
        Pair dpooled = random_pair(ys, ++seed);
        Pair dx = grad_out_pair(xs, acc, ++seed);
        Tensor two_kernels = make(xs, gpu(), dx.gpu.to_vector());
        Tensor scratch(xs, Device::cpu()), none;
        lrn_pool_backward(x.cpu, y.cpu, denom.cpu, pooled.cpu, dpooled.cpu, dx.cpu, lp, g, acc, scratch);
        lrn_pool_backward(x.gpu, y.gpu, denom.gpu, pooled.gpu, dpooled.gpu, dx.gpu, lp, g, acc, none);
        const auto want = dx.cpu.to_vector();
        EXPECT_TRUE(all_close(dx.gpu.to_vector(), want, 1e-4, 1e-5 * max_abs(want)));
        Tensor dy_gpu = poisoned(xs, gpu());
        pool_backward(y.gpu, pooled.gpu, dpooled.gpu, dy_gpu, g, false);
        lrn_backward(x.gpu, y.gpu, denom.gpu, dy_gpu, two_kernels, lp, acc);
        EXPECT_TRUE(same_bits(dx.gpu, two_kernels)) << "fused and separate kernels differ";
      }
}

// ================================================================================================
// Dropout: the mask must be exactly the CPU's (and philox_uniform's) for the same seed and step,
// 64-bit seeds and steps included.
// ================================================================================================

// Nonzero inputs of either sign, so a zero output means a dropped unit.
std::vector<float> nonzero_values(size_t n, uint32_t seed) {
  auto v = random_vector(n, seed, 0.25f, 1.25f);
  std::mt19937 rng(seed ^ 0x5bd1e995u);
  for (auto& x : v)
    if (rng() & 1) x = -x;
  return v;
}

TEST(CudaDropout, ShardOfAGlobalBatchMatchesCpuExactly) {
  CONVNET_REQUIRE_GPU();
  uint32_t vseed = 1300;
  for (int batch : {5, 64})
    for (int first : {0, 1, 3})
      for (bool acc : {false, true}) {
        SCOPED_TRACE("batch " + std::to_string(batch) + " first " + std::to_string(first) +
                     (acc ? " accumulate" : " overwrite"));
        const Shape s = {9, 2, 3, batch};
        const BatchShard shard{first, batch + first + 7};
        Pair in = pair_of(s, nonzero_values(size_t(9 * 2 * 3 * batch), ++vseed));
        Pair out = grad_out_pair(s, acc, ++vseed);
        dropout_apply(in.cpu, out.cpu, 0.5f, 11, 4, acc, shard);
        dropout_apply(in.gpu, out.gpu, 0.5f, 11, 4, acc, shard);
        const auto got = out.gpu.to_vector(), want = out.cpu.to_vector();
        EXPECT_TRUE(all_close(got, want, 1e-6, 0));
        int64_t mask_diff = 0;
        for (size_t k = 0; k < got.size(); ++k) mask_diff += (got[k] == 0.f) != (want[k] == 0.f);
        EXPECT_EQ(mask_diff, 0);
      }
}

TEST(CudaDropout, MaskAndValuesMatchCpuExactly) {
  CONVNET_REQUIRE_GPU();
  struct Case {
    int64_t n;
    float rate;
    uint64_t seed, step;
  };
  const std::vector<Case> cases = {
      {1, 0.5f, 1, 0},
      {7, 0.5f, 3, 1},
      {1000, 0.3f, 42, 7},
      {4096 * 5 + 3, 0.5f, 0x123456789abcdef0ull, (uint64_t(1) << 33) + 5},  // high bits of both
      {4096 * 128, 0.5f, 9, 123456},                                          // AlexNet fc6
      {333, 0.f, 5, 5},                                                       // rate 0: a copy
      {999, 0.9f, 77, 3},
  };
  uint32_t vseed = 1100;
  for (const Case& c : cases)
    for (bool acc : {false, true}) {
      SCOPED_TRACE("n " + std::to_string(c.n) + " rate " + std::to_string(c.rate) + " seed " +
                   std::to_string(c.seed) + " step " + std::to_string(c.step) +
                   (acc ? " accumulate" : " overwrite"));
      const Shape s = {int(c.n)};
      Pair in = pair_of(s, nonzero_values(size_t(c.n), ++vseed));
      Pair out = grad_out_pair(s, acc, ++vseed);
      const auto out0 = out.cpu.to_vector();
      dropout_apply(in.cpu, out.cpu, c.rate, c.seed, c.step, acc);
      dropout_apply(in.gpu, out.gpu, c.rate, c.seed, c.step, acc);
      const auto got = out.gpu.to_vector(), want = out.cpu.to_vector();
      // The mask, read back from the outputs, against the CPU and against philox_uniform.
      int64_t mask_diff = 0, philox_diff = 0;
      int64_t first = -1;
      for (int64_t i = 0; i < c.n; ++i) {
        const size_t k = size_t(i);
        const bool kept_gpu = acc ? got[k] != out0[k] : got[k] != 0.f;
        const bool kept_cpu = acc ? want[k] != out0[k] : want[k] != 0.f;
        const bool kept_ref = philox_uniform(c.seed, c.step, uint64_t(i)) >= c.rate;
        if (kept_gpu != kept_cpu) {
          if (first < 0) first = i;
          ++mask_diff;
        }
        if (kept_gpu != kept_ref) ++philox_diff;
      }
      EXPECT_EQ(mask_diff, 0) << "GPU and CPU masks differ, first at element " << first;
      EXPECT_EQ(philox_diff, 0) << "GPU mask differs from philox_uniform";
      // Kept values: in / (1 - rate); a multiply by 1/(1-rate) may differ by an ulp.
      EXPECT_TRUE(all_close(got, want, 1e-6, 0));
    }
}

// ================================================================================================
// Softmax with the multinomial logistic cost.
// ================================================================================================

struct SoftmaxCase {
  int classes, batch;
};

std::vector<SoftmaxCase> softmax_cases() {
  return {{10, 1}, {5, 33}, {3, 4}, {1000, 7}, {1000, 128}, {17, 129}};
}

// Logits whose classes are well separated within each case (a random permutation of evenly
// spaced values), so the top-1/top-5 decisions do not hang on rounding; labels chosen so that
// some cases are right (argmax), some in the top 5, the rest anywhere.
void separated_problem(int K, int N, uint32_t seed, std::vector<float>& logits,
                       std::vector<float>& labels) {
  std::mt19937 rng(seed);
  logits.assign(size_t(K) * N, 0.f);
  labels.assign(size_t(N), 0.f);
  const float spacing = 8.f / float(K);
  std::vector<int> order(static_cast<size_t>(K));
  for (int n = 0; n < N; ++n) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);  // order[r] = class of rank r (0 = largest)
    const float offset = std::uniform_real_distribution<float>(-2.f, 2.f)(rng);
    for (int r = 0; r < K; ++r)
      logits[size_t(order[size_t(r)]) * N + n] = offset + spacing * float(K - r) + 0.1f * spacing *
          std::uniform_real_distribution<float>(0.f, 1.f)(rng);
    int rank;
    switch (n % 3) {
      case 0: rank = 0; break;
      case 1: rank = std::uniform_int_distribution<int>(0, std::min(K, 5) - 1)(rng); break;
      default: rank = std::uniform_int_distribution<int>(0, K - 1)(rng); break;
    }
    labels[size_t(n)] = float(order[size_t(rank)]);
  }
}

TEST(CudaSoftmaxCost, ForwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1200;
  for (const SoftmaxCase& t : softmax_cases()) {
    SCOPED_TRACE("K " + std::to_string(t.classes) + " N " + std::to_string(t.batch));
    std::vector<float> lv, yv;
    separated_problem(t.classes, t.batch, ++seed, lv, yv);
    const Shape s = {t.classes, 1, 1, t.batch};
    Pair logits = pair_of(s, lv), labels = pair_of({1, 1, 1, t.batch}, yv);
    Pair probs = poisoned_pair(s);
    const CostStats want = softmax_cost_forward(logits.cpu, labels.cpu, probs.cpu);
    const CostStats got = softmax_cost_forward(logits.gpu, labels.gpu, probs.gpu);
    EXPECT_EQ(got.top1_errors, want.top1_errors);
    EXPECT_EQ(got.top5_errors, want.top5_errors);
    EXPECT_NEAR(got.cost_sum, want.cost_sum, 1e-5 * std::fabs(want.cost_sum) + 1e-6);
    EXPECT_TRUE(all_close(probs.gpu, probs.cpu, 1e-5, 1e-8)) << "probs";
    EXPECT_TRUE(all_close(logits.gpu, logits.cpu, 0, 0)) << "logits were written";
  }
}

TEST(CudaSoftmaxCost, ForwardOnRandomLogitsAndInPlace) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1300;
  for (const SoftmaxCase& t : softmax_cases())
    for (bool in_place : {false, true}) {
      SCOPED_TRACE("K " + std::to_string(t.classes) + " N " + std::to_string(t.batch) +
                   (in_place ? " in place" : ""));
      const Shape s = {t.classes, 1, 1, t.batch};
      Pair logits = random_pair(s, ++seed, -6.f, 6.f);
      std::vector<float> yv(static_cast<size_t>(t.batch));
      std::mt19937 rng(++seed);
      for (auto& y : yv) y = float(std::uniform_int_distribution<int>(0, t.classes - 1)(rng));
      Pair labels = pair_of({t.batch}, yv);
      Pair probs = in_place ? logits : poisoned_pair(s);
      const CostStats want = softmax_cost_forward(logits.cpu, labels.cpu, probs.cpu);
      const CostStats got = softmax_cost_forward(logits.gpu, labels.gpu, probs.gpu);
      EXPECT_NEAR(got.cost_sum, want.cost_sum, 1e-5 * std::fabs(want.cost_sum) + 1e-6);
      EXPECT_TRUE(all_close(probs.gpu, probs.cpu, 1e-5, 1e-8)) << "probs";
    }
}

TEST(CudaSoftmaxCost, BackwardMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1400;
  for (const SoftmaxCase& t : softmax_cases())
    for (bool acc : {false, true}) {
      SCOPED_TRACE("K " + std::to_string(t.classes) + " N " + std::to_string(t.batch) +
                   (acc ? " accumulate" : " overwrite"));
      std::vector<float> lv, yv;
      separated_problem(t.classes, t.batch, ++seed, lv, yv);
      const Shape s = {t.classes, 1, 1, t.batch};
      Tensor lh = make(s, Device::cpu(), lv), yh = make({t.batch}, Device::cpu(), yv),
             ph(s, Device::cpu());
      softmax_cost_forward(lh, yh, ph);
      Pair probs = pair_of(s, ph.to_vector()), labels = pair_of({t.batch}, yv);
      Pair dlogits = grad_out_pair(s, acc, ++seed);
      const float scale = 0.7f / float(t.batch);
      softmax_cost_backward(probs.cpu, labels.cpu, scale, dlogits.cpu, acc);
      softmax_cost_backward(probs.gpu, labels.gpu, scale, dlogits.gpu, acc);
      EXPECT_TRUE(all_close(dlogits.gpu, dlogits.cpu, 1e-5, 1e-8));
    }
}

// ================================================================================================
// SGD update and axpby.
// ================================================================================================

// The updates add terms near 1 (weights in [-1, 1], gradients scaled by up to 2) into results
// that can cancel to near 0: whether a compiler fuses a multiply and an add (FMA) moves such a
// result by a float32 spacing of the terms, not of the result. Seen: clang's -O1 CPU build
// against the emulated kernels, 1.2e-7 and 2.4e-7 (two steps).
constexpr double kTermsRounding = 3e-7;

TEST(CudaSgd, UpdateMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1500;
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(1 << 20) + 3}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const Shape s = {int(n)};
    Pair w = random_pair(s, ++seed), g = random_pair(s, ++seed), v = random_pair(s, ++seed, -0.1f, 0.1f);
    sgd_update(w.cpu, g.cpu, v.cpu, 0.01f, 0.9f, 0.0005f);
    sgd_update(w.gpu, g.gpu, v.gpu, 0.01f, 0.9f, 0.0005f);
    EXPECT_TRUE(all_close(v.gpu, v.cpu, 1e-5, kTermsRounding)) << "velocity";
    EXPECT_TRUE(all_close(w.gpu, w.cpu, 1e-5, kTermsRounding)) << "weights";
    EXPECT_TRUE(all_close(g.gpu, g.cpu, 0, 0)) << "the gradient was written";
  }
}

TEST(CudaNesterov, UpdateMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1600;
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(1 << 20) + 3}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const Shape s = {int(n)};
    Pair w = random_pair(s, ++seed), v = random_pair(s, ++seed, -0.1f, 0.1f);
    for (int step = 0; step < 2; ++step) {
      Pair g = random_pair(s, ++seed);
      nesterov_update(w.cpu, g.cpu, v.cpu, 0.05f, 0.9f, 0.01f);
      nesterov_update(w.gpu, g.gpu, v.gpu, 0.05f, 0.9f, 0.01f);
      EXPECT_TRUE(all_close(v.gpu, v.cpu, 1e-5, kTermsRounding)) << "velocity";
      EXPECT_TRUE(all_close(w.gpu, w.cpu, 1e-5, kTermsRounding)) << "weights";
      EXPECT_TRUE(all_close(g.gpu, g.cpu, 0, 0)) << "the gradient was written";
    }
  }
}

TEST(CudaAdamW, UpdateMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1700;
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(1 << 20) + 3}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const Shape s = {int(n)};
    Pair w = random_pair(s, ++seed), m = random_pair(s, ++seed, -0.1f, 0.1f),
         v = random_pair(s, ++seed, 0.f, 0.1f);
    for (uint64_t t = 1; t <= 3; ++t) {
      Pair g = random_pair(s, ++seed);
      const AdamWHyper h{0.01f, 0.1f, 0.9, 0.999, 1e-8f, t};
      adamw_update(w.cpu, g.cpu, m.cpu, v.cpu, h);
      adamw_update(w.gpu, g.gpu, m.gpu, v.gpu, h);
      // m = 0.9 m + 0.1 g sums terms up to 0.2, whose float32 spacing is 1.5e-8, and may cancel
      // to 1e-4: nvcc contracts it into one FMA, the CPU compiler perhaps the other way round,
      // and three steps carry the difference on. A few such spacings, then (an H200 showed 6e-8).
      EXPECT_TRUE(all_close(m.gpu, m.cpu, 1e-5, 1.2e-7)) << "m";
      EXPECT_TRUE(all_close(v.gpu, v.cpu, 1e-5, 1e-9)) << "v";
      EXPECT_TRUE(all_close(w.gpu, w.cpu, 1e-5, 1e-7)) << "weights";
      EXPECT_TRUE(all_close(g.gpu, g.cpu, 0, 0)) << "the gradient was written";
    }
  }
}

TEST(CudaAxpby, MatchesCpu) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1600;
  struct Case {
    Shape src, dst;
  };
  const std::vector<Case> cases = {
      {{1}, {1}}, {{7}, {7}}, {{4, 5, 6, 3}, {120, 3}}, {{48, 13, 13, 129}, {48 * 13 * 13 * 129}}};
  for (const Case& c : cases)
    for (float scale : {0.37f, -2.f, 1.f})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(str(c.src) + " -> " + str(c.dst) + " scale " + std::to_string(scale) +
                     (acc ? " accumulate" : " overwrite"));
        Pair src = random_pair(c.src, ++seed);
        Pair dst = grad_out_pair(c.dst, acc, ++seed);
        axpby(scale, src.cpu, dst.cpu, acc);
        axpby(scale, src.gpu, dst.gpu, acc);
        EXPECT_TRUE(all_close(dst.gpu, dst.cpu, 1e-6, kTermsRounding));
      }
}

// The trainer's gradient norm: both sum in double (in different orders), so they agree to
// double rounding, and each repeats itself exactly.
TEST(CudaSumSquares, MatchesCpuAndRepeats) {
  CONVNET_REQUIRE_GPU();
  uint32_t seed = 1700;
  for (const Shape& shape : std::vector<Shape>{{1}, {255}, {257}, {96, 3, 11, 11}, {4096, 9216}}) {
    SCOPED_TRACE(str(shape));
    Pair x = random_pair(shape, ++seed, -3.f, 3.f);
    const double cpu = sum_squares(x.cpu), gpu_sum = sum_squares(x.gpu);
    EXPECT_NEAR(gpu_sum, cpu, 1e-12 * cpu);
    EXPECT_EQ(sum_squares(x.gpu), gpu_sum);
  }
}

// The batched form (one sync per step in the trainer) adds the same block partials in the same
// order as one call per tensor.
TEST(CudaSumSquares, OfSeveralTensorsEqualsTheSumOfEach) {
  CONVNET_REQUIRE_GPU();
  std::vector<Pair> xs;
  uint32_t seed = 1800;
  for (const Shape& shape : std::vector<Shape>{{3}, {257}, {96, 3, 11, 11}, {1}, {4096, 300}})
    xs.push_back(random_pair(shape, ++seed, -2.f, 2.f));
  std::vector<const Tensor*> gpu, cpu;
  double each_gpu = 0;
  for (const Pair& x : xs) {
    gpu.push_back(&x.gpu);
    cpu.push_back(&x.cpu);
    each_gpu += sum_squares(x.gpu);
  }
  const double batched = sum_squares(gpu);
  EXPECT_EQ(batched, each_gpu);
  EXPECT_NEAR(batched, sum_squares(cpu), 1e-12 * batched);
}

// ================================================================================================
// Whole nets on the GPU against the CPU.
// ================================================================================================

std::string config(const std::string& name) {
  return std::string(CONVNET_SOURCE_DIR) + "/configs/" + name;
}

// The DAG of test_net.cpp: a shared output feeding three layers, a join, a split, a sum, LRN,
// both pools, dropout, a multi-input fc.
const char* kDag = R"([
  {"name":"data","type":"input","channels":4,"size":9},
  {"name":"labels","type":"labels"},
  {"name":"c1","type":"conv","inputs":["data"],"filters":6,"size":3,"padding":1,"neuron":"tanh","initW":0.3,"initB":0.1},
  {"name":"r1","type":"lrn","inputs":["c1"],"size":3,"alpha":0.5},
  {"name":"s1","type":"split","inputs":["c1"],"start":2,"count":3},
  {"name":"c2","type":"conv","inputs":["r1"],"filters":3,"size":3,"padding":1,"groups":3,"neuron":"logistic","initW":0.3},
  {"name":"sum","type":"sum","inputs":["c2","s1"],"coeffs":[1.0,-0.5]},
  {"name":"p1","type":"pool","inputs":["sum"],"pool":"avg","size":3,"stride":2},
  {"name":"p2","type":"pool","inputs":["c1"],"pool":"avg","size":2,"stride":2,"ceil":true},
  {"name":"d1","type":"dropout","inputs":["p1"],"rate":0.3},
  {"name":"f1","type":"fc","inputs":["d1","p2"],"outputs":7,"neuron":"softsign","initW":0.2},
  {"name":"f2","type":"fc","inputs":["f1"],"outputs":5,"initW":0.3},
  {"name":"cost","type":"softmax_cost","inputs":["f2","labels"]}
])";

// One batch, on the host: images {C, S, S, N} uniform in [lo, hi), labels in [0, classes).
struct Batch {
  Tensor images, labels;
};

Batch make_batch(int channels, int size, int batch, int classes, uint32_t seed, float lo, float hi) {
  Batch b;
  b.images = make({channels, size, size, batch}, Device::cpu(),
                  random_vector(size_t(channels) * size * size * batch, seed, lo, hi));
  std::mt19937 rng(seed + 1);
  std::vector<float> y(static_cast<size_t>(batch));
  for (auto& v : y) v = float(std::uniform_int_distribution<int>(0, classes - 1)(rng));
  b.labels = make({batch}, Device::cpu(), y);
  return b;
}

void feed(Net& net, const Batch& b) {
  net.set_input("data", b.images);
  net.set_input("labels", b.labels);
}

struct StepTolerance {
  double cost = 1e-4;     // relative, of the objective
  double output = 1e-4;   // relative norm error of each layer's output
  double grad = 1e-3;     // relative norm error of each parameter gradient
  double value = 1e-4;    // relative norm error of each parameter after the update
};

// Copies the reference net's parameters into `test` (after checking that the same seed gave the
// same initial values), so that the comparison does not hang on initialisation.
void same_start(Net& ref, Net& test) {
  auto pr = ref.params(), pt = test.params();
  ASSERT_EQ(pr.size(), pt.size());
  for (size_t i = 0; i < pr.size(); ++i) {
    ASSERT_EQ(pr[i]->name, pt[i]->name);
    EXPECT_EQ(rel_error(pt[i]->value.to_vector(), pr[i]->value.to_vector()), 0)
        << pr[i]->name << ": the same seed gave different initial values on "
        << pt[i]->value.device().str();
    pt[i]->value.copy_from(pr[i]->value);
  }
}

// One training step of both nets on the same batch: the objective, every layer's output, every
// gradient, and every parameter and momentum buffer after the update, `test` against `ref`.
void compare_step(Net& ref, Net& test, const Batch& batch, const StepTolerance& tol) {
  feed(ref, batch);
  feed(test, batch);
  const CostReport want = ref.forward(true);
  const CostReport got = test.forward(true);
  EXPECT_NEAR(got.objective, want.objective, tol.cost * std::fabs(want.objective) + 1e-7)
      << "objective";
  ASSERT_EQ(got.costs.size(), want.costs.size());
  for (Layer* layer : ref.layers()) {
    const std::string& name = layer->name();
    EXPECT_LT(rel_error(test.output(name).to_vector(), ref.output(name).to_vector()), tol.output)
        << "output of layer '" << name << "'";
  }
  ref.backward();
  test.backward();
  auto pr = ref.params(), pt = test.params();
  ASSERT_EQ(pr.size(), pt.size());
  for (size_t i = 0; i < pr.size(); ++i)
    EXPECT_LT(rel_error(pt[i]->grad.to_vector(), pr[i]->grad.to_vector()), tol.grad)
        << "gradient of " << pr[i]->name;
  ref.update();
  test.update();
  for (size_t i = 0; i < pr.size(); ++i) {
    EXPECT_LT(rel_error(pt[i]->value.to_vector(), pr[i]->value.to_vector()), tol.value)
        << pr[i]->name << " after the update";
    EXPECT_LT(rel_error(pt[i]->state_tensor("velocity").to_vector(), pr[i]->state_tensor("velocity").to_vector()), tol.grad)
        << "momentum of " << pr[i]->name;
  }
  EXPECT_EQ(test.step(), ref.step());
}

TEST(CudaNet, DagMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  Net cpu(ModelSpec::from_json(kDag), {}, 3);
  Net gpu_net(ModelSpec::from_json(kDag), {gpu()}, 3);
  gpu_net.set_math_mode(MathMode::Fp32);
  ASSERT_EQ(gpu_net.device_of("c2"), gpu());
  same_start(cpu, gpu_net);
  StepTolerance tol;
  tol.cost = 1e-5;
  tol.output = 1e-5;
  tol.grad = 1e-4;
  tol.value = 1e-5;
  // Odd batch, then batch 1 (re-planned buffers), then odd again: three steps in a row.
  int step = 0;
  for (int batch : {3, 1, 5}) {
    SCOPED_TRACE("step " + std::to_string(step) + ", batch " + std::to_string(batch));
    compare_step(cpu, gpu_net, make_batch(4, 9, batch, 5, 40 + uint32_t(step), -1.f, 1.f), tol);
    ++step;
  }
}

// AlexNet-2012 with both towers on cuda:0 against both on the CPU: one training step at batch 4
// in fp32 (about 2 GFLOP per image; the CPU side takes a few seconds).
TEST(CudaNet, AlexNetOneStepMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  const auto spec = ModelSpec::from_file(config("alexnet_2012.json"));
  Net cpu(spec, {Device::cpu(), Device::cpu()}, 1);
  Net gpu_net(spec, {gpu(), gpu()}, 1);
  gpu_net.set_math_mode(MathMode::Fp32);
  EXPECT_EQ(gpu_net.math_mode(), MathMode::Fp32);
  same_start(cpu, gpu_net);
  // Pixels like mean-subtracted images, so LRN and the ReLUs see realistic magnitudes.
  compare_step(cpu, gpu_net, make_batch(3, 224, 4, 1000, 7, -128.f, 128.f), StepTolerance{});
}

TEST(CudaNet, TwoTowersOnTwoGpusMatchCpu) {
  CONVNET_REQUIRE_GPU();
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, " << cuda_device_count() << " visible";
  {
    SCOPED_TRACE("DAG spread over cuda:0 and cuda:1");
    auto spec = ModelSpec::from_json(kDag);
    for (auto& l : spec.layers)
      if (l.name == "r1" || l.name == "c2" || l.name == "p2" || l.name == "f2") l.device = 1;
    Net cpu(spec, {Device::cpu(0), Device::cpu(1)}, 3);
    Net two(spec, {Device::cuda(0), Device::cuda(1)}, 3);
    two.set_math_mode(MathMode::Fp32);
    ASSERT_EQ(two.device_of("c2"), Device::cuda(1));
    same_start(cpu, two);
    StepTolerance tol;
    tol.grad = 1e-4;
    for (int step = 0; step < 2; ++step)
      compare_step(cpu, two, make_batch(4, 9, 3, 5, 60 + uint32_t(step), -1.f, 1.f), tol);
  }
  {
    SCOPED_TRACE("AlexNet towers on cuda:0 and cuda:1");
    const auto spec = ModelSpec::from_file(config("alexnet_2012.json"));
    Net cpu(spec, {Device::cpu(0), Device::cpu(1)}, 1);
    Net two(spec, {Device::cuda(0), Device::cuda(1)}, 1);
    two.set_math_mode(MathMode::Fp32);
    ASSERT_EQ(two.device_of("conv1b"), Device::cuda(1));
    same_start(cpu, two);
    compare_step(cpu, two, make_batch(3, 224, 4, 1000, 8, -128.f, 128.f), StepTolerance{});
  }
}

// A GPU that is not there is named before any CUDA call is made for it, and leaves no error
// behind for the next net (the GPU edges' events are created only once every device exists).
TEST(CudaNet, AMissingGpuIsNamedAndLeavesNoErrorBehind) {
  CONVNET_REQUIRE_GPU();
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "c2" || l.name == "f2") l.device = 1;
  try {
    Net net(spec, {Device::cuda(0), Device::cuda(99)}, 3);
    FAIL() << "no error for cuda:99";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:99"), std::string::npos) << e.what();
  }
  Net net(spec, {Device::cuda(0), Device::cuda(0)}, 3);
  Net cpu(spec, {}, 3);
  same_start(cpu, net);
  compare_step(cpu, net, make_batch(4, 9, 3, 5, 61, -1.f, 1.f), StepTolerance{});
}

// Two GPUs of a net reach each other's memory directly where the pair allows it; where it does
// not, the net says so (its copies then go through host memory) and still computes the same.
TEST(CudaNet, TwoGpusCopyPeerToPeerWhereTheyCan) {
  CONVNET_REQUIRE_GPU();
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, " << cuda_device_count() << " visible";
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "c2" || l.name == "f2") l.device = 1;
  Net two(spec, {Device::cuda(0), Device::cuda(1)}, 3);
  for (const auto& [a, b] : two.gpus_without_peer_access())
    std::printf("note: %s and %s have no peer access here\n", a.str().c_str(), b.str().c_str());
#ifdef CONVNET_CUDA_EMULATION  // every emulated pair has peer access unless told otherwise
  ASSERT_TRUE(two.gpus_without_peer_access().empty());
  setenv("CUDA_EMU_NO_PEER", "1", 1);
  Net staged(spec, {Device::cuda(0), Device::cuda(1)}, 3);
  unsetenv("CUDA_EMU_NO_PEER");
  ASSERT_EQ(staged.gpus_without_peer_access().size(), 1u);
  EXPECT_EQ(staged.gpus_without_peer_access()[0], std::make_pair(Device::cuda(0), Device::cuda(1)));
  Net cpu(spec, {}, 3);
  same_start(cpu, staged);
  compare_step(cpu, staged, make_batch(4, 9, 3, 5, 62, -1.f, 1.f), StepTolerance{});
#endif
}

// The hybrid (tests/data/hybrid_4dev.json: replicated convolutions, model-parallel fc layers,
// concatenations across devices) with its four logical devices on two GPUs, two replicas each,
// against the same placement on CPU devices.
TEST(CudaNet, ReplicasAndTheHybridOnGpusMatchCpu) {
  CONVNET_REQUIRE_GPU();
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, " << cuda_device_count() << " visible";
  const auto spec = ModelSpec::from_file(std::string(CONVNET_SOURCE_DIR) + "/tests/data/hybrid_4dev.json");
  Net cpu(spec, {Device::cpu(0), Device::cpu(1), Device::cpu(2), Device::cpu(3)}, 3);
  Net two(spec, {Device::cuda(0), Device::cuda(1), Device::cuda(0), Device::cuda(1)}, 3);
  two.set_math_mode(MathMode::Fp32);
  same_start(cpu, two);
  StepTolerance tol;
  tol.grad = 1e-4;
  for (int step = 0; step < 2; ++step)
    compare_step(cpu, two, make_batch(3, 12, 8, 5, 90 + uint32_t(step), -128.f, 128.f), tol);
}

#if defined(CONVNET_WITH_NCCL) && !defined(CONVNET_CUDA_EMULATION)
// NCCL is loaded when first used, not when convnet is: PyTorch imported after convnet must find
// its own NCCL (an older libnccl already in the process broke `import torch`). Runs without a GPU.
TEST(Nccl, IsLoadedOnlyWhenFirstUsed) {
  EXPECT_EQ(dlopen("libnccl.so.2", RTLD_NOW | RTLD_NOLOAD), nullptr) << "libnccl is loaded before any use";
  try {
    cuda::nccl_unique_id();  // may fail without a GPU; the library is loaded either way
  } catch (const RuntimeError& e) {
    std::printf("note: %s\n", e.what());
  }
  void* loaded = dlopen("libnccl.so.2", RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(loaded, nullptr) << "the first NCCL call did not load libnccl.so.2";
  if (loaded) dlclose(loaded);
}
#endif

// ---- lanes: logical devices that share one GPU, each on a stream of its own ----

#ifdef CONVNET_WITH_CUDA
// A block freed on one lane is handed out again on that lane alone: given to another at once,
// it could be written there while the first lane's kernels still read it.
TEST(CudaLanes, TheAllocatorReusesABlockOnlyOnTheLaneThatFreedIt) {
  CONVNET_REQUIRE_GPU();
  struct OnLane {
    explicit OnLane(int lane) { cuda::set_lane(lane); }
    ~OnLane() { cuda::set_lane(0); }
  };
  const size_t bytes = 731 * 512;  // a size class no other test uses
  void* freed_on_1 = nullptr;
  {
    OnLane one(1);
    freed_on_1 = cuda::allocate(bytes, 0);
    cuda::release(freed_on_1, 0);
  }
  void* on_0 = cuda::allocate(bytes, 0);
  EXPECT_NE(on_0, freed_on_1) << "lane 0 was given a block lane 1 freed";
  {
    OnLane one(1);
    void* again = cuda::allocate(bytes, 0);
    EXPECT_EQ(again, freed_on_1) << "lane 1 did not get its own freed block back";
    cuda::release(again, 0);
  }
  cuda::release(on_0, 0);
}
#endif  // CONVNET_WITH_CUDA (the allocator: a build without CUDA has none)

// The DAG's two towers on two lanes of one GPU compute what one lane computes, bit for bit:
// the same kernels on the same data, the lanes ordered by events (under cuda_emu the stream-order
// checker would name any use of one lane's memory by another that no event orders).
TEST(CudaLanes, TowersOnTwoLanesOfOneGpuComputeWhatOneLaneComputes) {
  CONVNET_REQUIRE_GPU();
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "r1" || l.name == "c2" || l.name == "p2" || l.name == "f2") l.device = 1;
  Net one(spec, {gpu()}, 3);
  Net two(spec, {gpu(), gpu()}, 3);
  ASSERT_EQ(one.lanes().size(), 1u);
  ASSERT_EQ(two.lanes().size(), 2u);
  EXPECT_EQ(two.lanes()[1].name(), "cuda:0 lane 1");
  EXPECT_EQ(two.device_of("c2"), gpu());
  Trace trace;
  two.set_trace(&trace);
  StepTolerance exact{1e-12, 1e-12, 1e-12, 1e-12};
  for (int step = 0; step < 3; ++step)
    compare_step(one, two, make_batch(4, 9, 6, 5, 40 + uint32_t(step), -1.f, 1.f), exact);
  two.set_trace(nullptr);
  // Passes with no host read between them, as in training: only events order lane 0's update
  // of lane 1's weights before lane 1's next forward, and lane 1's gradients before the update.
  const Batch b = make_batch(4, 9, 6, 5, 49, -1.f, 1.f);
  for (Net* net : {&one, &two}) {
    feed(*net, b);
    net->forward(true);
    net->backward();
    net->update();
    net->forward(true);
  }
  for (Layer* layer : one.layers())
    EXPECT_EQ(two.output(layer->name()).to_vector(), one.output(layer->name()).to_vector())
        << "output of layer '" << layer->name() << "'";
  std::set<std::string> tracks;
  for (const Trace::Span& s : trace.spans()) tracks.insert(s.track + "/" + s.name);
  EXPECT_TRUE(tracks.count("cuda:0 lane 1/c2")) << "no span of c2 on its lane";
  EXPECT_TRUE(tracks.count("cuda:0/c1")) << "no span of c1 on lane 0";
}

// The hybrid's four logical devices as four lanes of one GPU: replicas on lanes, their gradients
// summed across lanes, gathers into the model-parallel fc layers; against four CPU devices.
// Every layer on logical device 1, which is lane 1 of cuda:0: the host's work between passes
// (the update) is on lane 0, so lane 1 starts each pass after it (a fork of events) and lane 0
// goes on only after lane 1 (a join); passes with no host read between them prove both.
TEST(CudaLanes, ALaneBesidesLaneZeroForksFromItAndJoinsIt) {
  CONVNET_REQUIRE_GPU();
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers) l.device = 1;
  Net one(spec, {gpu()}, 3);
  Net lane1(spec, {gpu(), gpu()}, 3);
  ASSERT_EQ(lane1.lanes().size(), 1u);
  EXPECT_EQ(lane1.lanes()[0].name(), "cuda:0 lane 1");
  const Batch b = make_batch(4, 9, 6, 5, 48, -1.f, 1.f);
  for (Net* net : {&one, &lane1}) {
    feed(*net, b);
    for (int step = 0; step < 2; ++step) {
      net->forward(true);
      net->backward();
      net->update();
    }
    net->forward(true);
  }
  for (Layer* layer : one.layers())
    EXPECT_EQ(lane1.output(layer->name()).to_vector(), one.output(layer->name()).to_vector())
        << "output of layer '" << layer->name() << "'";
}

// The bucket hook (where MPI's all-reduce starts) runs on the calling thread, whose work goes
// to lane 0 of the bucket's GPU: a bucket that lane 1 wrote is joined into lane 0 first. Every
// layer but the labels on lane 1, so that nothing else orders the lanes while backward runs.
TEST(CudaLanes, TheBucketHookComesAfterTheGradientsOfTheBucketsLane) {
  CONVNET_REQUIRE_GPU();
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers) l.device = l.name == "labels" ? 0 : 1;
  Net one(spec, {gpu()}, 3);
  Net lane1(spec, {gpu(), gpu()}, 3);
  std::vector<double> seen_one, seen_lane1;
  one.set_bucket_ready_hook([&](size_t b) { seen_one.push_back(sum_squares(one.gradient_buckets()[b].flat)); });
  lane1.set_bucket_ready_hook(
      [&](size_t b) { seen_lane1.push_back(sum_squares(lane1.gradient_buckets()[b].flat)); });
  ASSERT_EQ(lane1.lanes().size(), 2u);
  const Batch b = make_batch(4, 9, 6, 5, 47, -1.f, 1.f);
  for (Net* net : {&one, &lane1}) {
    feed(*net, b);
    net->forward(true);
    net->backward();
  }
  ASSERT_FALSE(seen_one.empty());
  EXPECT_EQ(seen_lane1, seen_one);
}

TEST(CudaLanes, TheHybridOnFourLanesOfOneGpuMatchesCpu) {
  CONVNET_REQUIRE_GPU();
  const auto spec = ModelSpec::from_file(std::string(CONVNET_SOURCE_DIR) + "/tests/data/hybrid_4dev.json");
  Net cpu(spec, {Device::cpu(0), Device::cpu(1), Device::cpu(2), Device::cpu(3)}, 3);
  Net lanes(spec, {gpu(), gpu(), gpu(), gpu()}, 3);
  ASSERT_EQ(lanes.lanes().size(), 4u);
  same_start(cpu, lanes);
  StepTolerance tol;
  tol.grad = 1e-4;
  for (int step = 0; step < 2; ++step)
    compare_step(cpu, lanes, make_batch(3, 12, 8, 5, 95 + uint32_t(step), -128.f, 128.f), tol);
}

TEST(CudaLanes, ACudaGraphNeedsOneLane) {
  CONVNET_REQUIRE_GPU();
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "f2") l.device = 1;
  Net two(spec, {gpu(), gpu()}, 3);
  try {
    two.set_cuda_graph(true);
    FAIL() << "a CUDA graph was accepted for two lanes";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'f2' is on cuda:0 lane 1, layer 'data' on cuda:0 (a graph "
                                         "captures lane 0 alone)"),
              std::string::npos)
        << e.what();
  }
}

#ifdef CONVNET_CUDA_EMULATION
// No host wait inside a step on GPUs: the hybrid's replicas on two GPUs copy the primaries'
// weights in forward and bring their gradients home in backward with queued copies ordered by
// events. The device threads make no host wait in either pass, and neither do backward() and
// update() on the calling thread (forward() reads the cost there). Counted by cuda_emu.
TEST(CudaNet, ReplicasOnTwoGpusMakeNoHostWaitInAStep) {
  CONVNET_REQUIRE_GPU();
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA devices, " << cuda_device_count() << " visible";
  const auto spec = ModelSpec::from_file(std::string(CONVNET_SOURCE_DIR) + "/tests/data/hybrid_4dev.json");
  Net two(spec, {Device::cuda(0), Device::cuda(1), Device::cuda(0), Device::cuda(1)}, 3);
  ASSERT_EQ(two.lanes().size(), 4u);
  for (int step = 0; step < 2; ++step) {  // the second step: every buffer exists
    feed(two, make_batch(3, 12, 8, 5, 97 + uint32_t(step), -128.f, 128.f));
    const uint64_t all = cuda_emu::host_waits(), here = cuda_emu::host_waits_on_this_thread();
    two.forward(true);
    EXPECT_EQ(cuda_emu::host_waits() - all, cuda_emu::host_waits_on_this_thread() - here)
        << "a device thread waited for the host in forward, step " << step;
    const uint64_t after_forward = cuda_emu::host_waits();
    two.backward();
    two.update();
    EXPECT_EQ(cuda_emu::host_waits(), after_forward) << "backward or update waited for the host, step " << step;
  }
}
#endif

void train_step(Net& net, const Batch& b) {
  feed(net, b);
  net.forward(true);
  net.backward();
  net.update();
}

// The caching allocator: once the first steps have sized every buffer, a training step makes no
// cudaMalloc and holds no more memory than the one before.
TEST(CudaNet, SteadyStateStepMakesNoCudaMalloc) {
  CONVNET_REQUIRE_GPU();
  const auto spec = ModelSpec::from_file(config("alexnet_2012.json"));
  Net net(spec, {gpu(), gpu()}, 1);
  for (int i = 0; i < 2; ++i) train_step(net, make_batch(3, 224, 8, 1000, 70 + uint32_t(i), -128.f, 128.f));
  cuda_synchronize(0);
  const CudaMemoryStats warm = cuda_memory_stats(0);
  EXPECT_GT(warm.peak_bytes, size_t(0));
  EXPECT_GT(warm.current_bytes, size_t(0));
  EXPECT_GT(warm.cuda_malloc_calls, size_t(0));
  EXPECT_GE(warm.peak_bytes, warm.current_bytes);
  cuda_reset_peak(0);
  for (int i = 0; i < 3; ++i) train_step(net, make_batch(3, 224, 8, 1000, 80 + uint32_t(i), -128.f, 128.f));
  cuda_synchronize(0);
  const CudaMemoryStats steady = cuda_memory_stats(0);
  EXPECT_EQ(steady.cuda_malloc_calls, warm.cuda_malloc_calls)
      << "the steady-state training step called cudaMalloc";
  EXPECT_EQ(steady.current_bytes, warm.current_bytes) << "memory held grows from step to step";
  EXPECT_GT(steady.peak_bytes, size_t(0)) << "peak after cuda_reset_peak and three steps";
  EXPECT_GE(steady.peak_bytes, steady.current_bytes);
  // The parameters alone (value, gradient, momentum of 61M floats) are about 730 MB.
  EXPECT_GT(steady.peak_bytes, size_t(3) * 60965224 * sizeof(float));
}

// TF32 tensor cores: the step runs and the cost stays within 1e-2 of strict fp32.
TEST(CudaNet, Tf32ModeRunsAndIsCloseToFp32) {
  CONVNET_REQUIRE_GPU();
  const auto spec = ModelSpec::from_file(config("alexnet_2012.json"));
  Net net(spec, {gpu(), gpu()}, 1);
  const Batch b = make_batch(3, 224, 8, 1000, 90, -128.f, 128.f);
  feed(net, b);
  net.set_math_mode(MathMode::Fp32);
  const double fp32 = net.forward(false).objective;
  net.set_math_mode(MathMode::Tf32);
  EXPECT_EQ(net.math_mode(), MathMode::Tf32);
  feed(net, b);
  const double tf32 = net.forward(false).objective;
  ASSERT_TRUE(std::isfinite(tf32));
  EXPECT_NEAR(tf32, fp32, 1e-2);
  // A training step in TF32 runs and leaves finite parameters.
  feed(net, b);
  const double train = net.forward(true).objective;
  EXPECT_TRUE(std::isfinite(train));
  net.backward();
  net.update();
  for (Param* p : net.params()) {
    const auto v = p->value.to_vector();
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }))
        << p->name << " is not finite after a TF32 step";
  }
  net.set_math_mode(MathMode::Fp32);
}

// LRN -> pool fusion in a whole net on the GPU: the same bits as the layers' own backward passes,
// and the pool's backward is really skipped.
TEST(CudaNet, LrnPoolFusionGivesTheSameBits) {
  CONVNET_REQUIRE_GPU();
  const char* spec = R"([
    {"name":"data","type":"input","channels":4,"size":9},
    {"name":"labels","type":"labels"},
    {"name":"c1","type":"conv","inputs":["data"],"filters":20,"size":3,"padding":1,"neuron":"relu","initW":0.3,"initB":0.1},
    {"name":"r1","type":"lrn","inputs":["c1"],"size":5,"alpha":0.5},
    {"name":"p1","type":"pool","inputs":["r1"],"pool":"max","size":3,"stride":2},
    {"name":"f1","type":"fc","inputs":["p1"],"outputs":5,"initW":0.2},
    {"name":"cost","type":"softmax_cost","inputs":["f1","labels"]}
  ])";
  Net fused(ModelSpec::from_json(spec), {gpu()}, 5), separate(ModelSpec::from_json(spec), {gpu()}, 5);
  separate.set_fusion(false);
  ASSERT_EQ(fused.fused_layers(), std::vector<std::string>{"r1"});
  fused.set_profiling(true);
  for (int step = 0; step < 3; ++step) {
    const Batch b = make_batch(4, 9, 6, 5, 1150 + uint32_t(step), -1.f, 1.f);
    for (Net* n : {&fused, &separate}) {
      feed(*n, b);
      n->forward(true);
      n->backward();
    }
    auto pf = fused.params(), ps = separate.params();
    for (size_t i = 0; i < pf.size(); ++i)
      EXPECT_TRUE(same_bits(pf[i]->grad, ps[i]->grad)) << pf[i]->name << ", step " << step;
    fused.update();
    separate.update();
  }
  for (const auto& t : fused.layer_times()) {
    if (t.layer == "p1") EXPECT_EQ(t.backward_calls, 0) << "the pool ran its own backward";
    if (t.layer == "r1") EXPECT_EQ(t.backward_calls, 3);
    if (t.layer == "c1") {  // the ops inside the conv are timed on the GPU too, with their work
      ASSERT_TRUE(t.forward_ops.count("gemm") && t.forward_ops.count("im2col"));
      EXPECT_EQ(t.forward_ops.at("gemm").calls, 3);
      EXPECT_DOUBLE_EQ(t.forward_ops.at("gemm").flop, 3 * 2.0 * 20 * 36 * 81 * 6);
      EXPECT_LE(t.forward_ops.at("gemm").ms + t.forward_ops.at("im2col").ms, t.forward_ms + 1e-6);
    }
  }
}

// ================================================================================================
// CUDA graphs: the captured step against the eager one.
// ================================================================================================

// The relative error of every parameter (value and momentum) of `test` against `ref`.
void expect_same_params(Net& ref, Net& test, double tol, const std::string& when) {
  auto pr = ref.params(), pt = test.params();
  ASSERT_EQ(pr.size(), pt.size());
  for (size_t i = 0; i < pr.size(); ++i) {
    EXPECT_LE(rel_error(pt[i]->value.to_vector(), pr[i]->value.to_vector()), tol)
        << pr[i]->name << " " << when;
    EXPECT_LE(rel_error(pt[i]->state_tensor("velocity").to_vector(), pr[i]->state_tensor("velocity").to_vector()), tol)
        << "momentum of " << pr[i]->name << " " << when;
  }
}

// Steps replayed from a graph give the eager steps' numbers: the dropout masks follow the step
// (a graph replaying the captured step's masks would differ by O(1)), the cost statistics come
// back after the replay, a new batch size captures again, and the outputs of every layer agree.
TEST(CudaGraph, StepsEqualEagerSteps) {
  CONVNET_REQUIRE_GPU();
  Net eager(ModelSpec::from_json(kDag), {gpu()}, 3);
  Net graph(ModelSpec::from_json(kDag), {gpu()}, 3);
  graph.set_cuda_graph(true);
  EXPECT_TRUE(graph.cuda_graph());
  int step = 0;
  for (int batch : {5, 5, 5, 5, 3, 3, 3}) {
    const std::string when = "after step " + std::to_string(step) + " (batch " + std::to_string(batch) + ")";
    const Batch b = make_batch(4, 9, batch, 5, 500 + uint32_t(step), -1.f, 1.f);
    feed(eager, b);
    feed(graph, b);
    const CostReport want = eager.forward(true);
    eager.backward();
    const CostReport got = graph.forward_backward();
    EXPECT_NEAR(got.objective, want.objective, 1e-6 * std::fabs(want.objective)) << when;
    ASSERT_EQ(got.costs.size(), 1u);
    EXPECT_EQ(got.costs[0].top1_error, want.costs[0].top1_error) << when;
    EXPECT_EQ(got.batch, batch);
    for (Layer* layer : eager.layers())
      EXPECT_LE(rel_error(graph.output(layer->name()).to_vector(), eager.output(layer->name()).to_vector()), 1e-6)
          << "output of '" << layer->name() << "' " << when;
    // Step 0 of each batch size runs eagerly; from step 1 on, a graph is captured and replayed.
    const bool warm_up = step == 0 || step == 4;
    if (warm_up) EXPECT_EQ(graph.cuda_graph_nodes(), 0u) << when;
    else EXPECT_GT(graph.cuda_graph_nodes(), 10u) << when;
    eager.update();
    graph.update();
    expect_same_params(eager, graph, 1e-6, when);
    ++step;
  }
}

// A backward from given gradients between captured steps gives every layer its own gradient
// buffer (dropping the graph, whose kernels hold the shared ones); the next steps share them
// again, capture again and give the eager numbers.
TEST(CudaGraph, ABackwardFromGivenGradientsBetweenStepsCapturesAgain) {
  CONVNET_REQUIRE_GPU();
  Net eager(ModelSpec::from_json(kDag), {gpu()}, 3);
  Net graph(ModelSpec::from_json(kDag), {gpu()}, 3);
  graph.set_cuda_graph(true);
  for (int step = 0; step < 5; ++step) {
    const std::string when = "after step " + std::to_string(step);
    const Batch b = make_batch(4, 9, 5, 5, 900 + uint32_t(step), -1.f, 1.f);
    feed(eager, b);
    feed(graph, b);
    if (step == 2) {  // given gradients for f1, on both nets
      Tensor dy(eager.output_shape("f1"), gpu());
      dy.copy_from_host(random_vector(size_t(dy.numel()), 77).data());
      for (Net* n : {&eager, &graph}) {
        n->forward(true);
        n->backward({{"f1", dy}});
      }
      EXPECT_EQ(graph.cuda_graph_nodes(), 0u) << "the graph outlived the buffers it holds";
    } else {
      eager.forward(true);
      eager.backward();
      graph.forward_backward();
    }
    if (step == 4) EXPECT_GT(graph.cuda_graph_nodes(), 10u) << "no graph captured again";
    eager.update();
    graph.update();
    expect_same_params(eager, graph, 1e-6, when);
  }
}

// The graph's backward writes into the gradient buckets (addresses fixed at capture), and an
// all-reduce-like scaling of the buckets between backward and an AdamW update gives the eager
// numbers.
TEST(CudaGraph, StepsIntoTheBucketsWithAdamW) {
  CONVNET_REQUIRE_GPU();
  Net eager(ModelSpec::from_json(kDag), {gpu()}, 3);
  Net graph(ModelSpec::from_json(kDag), {gpu()}, 3);
  for (Net* n : {&eager, &graph}) n->set_solver(SolverOptions{"adamw"});
  graph.set_cuda_graph(true);
  for (const Net::GradientBucket& b : graph.gradient_buckets()) EXPECT_EQ(b.device, gpu());
  for (int step = 0; step < 4; ++step) {
    const std::string when = "after step " + std::to_string(step);
    const Batch b = make_batch(4, 9, 5, 5, 700 + uint32_t(step), -1.f, 1.f);
    feed(eager, b);
    feed(graph, b);
    eager.forward(true);
    eager.backward();
    graph.forward_backward();
    for (Net* n : {&eager, &graph})
      for (const Net::GradientBucket& bucket : n->gradient_buckets()) {
        Tensor flat = bucket.flat;
        axpby(0.5f, flat, flat, false);
      }
    eager.update();
    graph.update();
    auto pe = eager.params(), pg = graph.params();
    for (size_t i = 0; i < pe.size(); ++i)
      for (const char* state : {"m", "v"})
        EXPECT_LE(rel_error(pg[i]->state_tensor(state).to_vector(), pe[i]->state_tensor(state).to_vector()), 1e-6)
            << state << " of " << pe[i]->name << " " << when;
    for (size_t i = 0; i < pe.size(); ++i)
      EXPECT_LE(rel_error(pg[i]->value.to_vector(), pe[i]->value.to_vector()), 1e-6) << pe[i]->name << " " << when;
  }
  EXPECT_GT(graph.cuda_graph_nodes(), 10u);
}

// Replays allocate nothing: the memory held and the cudaMalloc count stay as they were.
TEST(CudaGraph, ReplaysMakeNoCudaMalloc) {
  CONVNET_REQUIRE_GPU();
  Net net(ModelSpec::from_json(kDag), {gpu()}, 3);
  net.set_cuda_graph(true);
  for (int i = 0; i < 2; ++i) {  // warm-up, capture
    feed(net, make_batch(4, 9, 6, 5, 600 + uint32_t(i), -1.f, 1.f));
    net.forward_backward();
    net.update();
  }
  cuda_synchronize(0);
  const CudaMemoryStats before = cuda_memory_stats(0);
  for (int i = 0; i < 4; ++i) {
    feed(net, make_batch(4, 9, 6, 5, 610 + uint32_t(i), -1.f, 1.f));
    net.forward_backward();
    net.update();
  }
  cuda_synchronize(0);
  const CudaMemoryStats after = cuda_memory_stats(0);
  EXPECT_EQ(after.cuda_malloc_calls, before.cuda_malloc_calls);
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GT(net.cuda_graph_nodes(), 0u);
}

// A bad label reaches the kernel inside the graph (no host check runs before a replay): it is
// reported by name once the replay's statistics come back.
TEST(CudaGraph, BadLabelInAReplayIsNamed) {
  CONVNET_REQUIRE_GPU();
  Net net(ModelSpec::from_json(kDag), {gpu()}, 3);
  net.set_cuda_graph(true);
  for (int i = 0; i < 2; ++i) {
    feed(net, make_batch(4, 9, 4, 5, 700 + uint32_t(i), -1.f, 1.f));
    net.forward_backward();
  }
  Batch bad = make_batch(4, 9, 4, 5, 702, -1.f, 1.f);
  std::vector<float> y = bad.labels.to_vector();
  y[2] = 9.f;
  bad.labels.copy_from_host(y.data());
  feed(net, bad);
  try {
    net.forward_backward();
    FAIL() << "no error for label 9 of 5 classes";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("label 9 of case 2"), std::string::npos) << e.what();
  }
  EXPECT_GT(net.cuda_graph_nodes(), 0u);
}

TEST(CudaSoftmaxCost, BadLabelIsNamedAndNotReadOutOfBounds) {
  CONVNET_REQUIRE_GPU();
  const int K = 6, N = 5;
  Pair logits = random_pair({K, 1, 1, N}, 800, -3.f, 3.f);
  for (float bad : {6.f, -1.f, 2.5f, 1e9f}) {
    SCOPED_TRACE("label " + std::to_string(bad));
    std::vector<float> y = {0, 1, 2, bad, 5};
    Tensor labels = make({N}, gpu(), y);
    Tensor probs = poisoned({K, 1, 1, N}, gpu());
    EXPECT_THROW(softmax_cost_forward(logits.gpu, labels, probs), ValueError);
  }
}

// Batches in page-locked memory (PipelineOptions::pinned_memory): the driver sees the full-size
// ones as page-locked, their contents are those of ordinary batches, and a net fed from them
// (uploaded by DMA, no staging copy) trains to the same bits as one fed from ordinary batches.
TEST(CudaPipeline, PinnedBatchesArePageLockedAndTrainTheSameBits) {
  CONVNET_REQUIRE_GPU();
  auto source = generated_source(100, 5, 4, 9, 3);  // batches of 32, 32, 32, 4
  PipelineOptions plain_options;
  plain_options.batch = 32;
  plain_options.reuse_batch_memory = true;
  PipelineOptions pinned_options = plain_options;
  pinned_options.pinned_memory = true;
  Pipeline plain(source, plain_options), pinned(source, pinned_options);
  Net plain_net(ModelSpec::from_json(kDag), {gpu()}, 3), pinned_net(ModelSpec::from_json(kDag), {gpu()}, 3);
  int batches = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    convnet::Batch a, b;
    while (plain.next(a)) {
      const std::string when = "batch " + std::to_string(batches);
      ASSERT_TRUE(pinned.next(b)) << when;
      const bool full = b.images.dim(3) == 32;
      EXPECT_FALSE(a.images.is_pinned()) << when;
      EXPECT_EQ(b.images.is_pinned(), full) << when << ": only full-size batches are page-locked";
      EXPECT_EQ(b.labels.is_pinned(), full) << when;
#ifdef CONVNET_WITH_CUDA
      EXPECT_EQ(cuda::is_page_locked(b.images.data()), full) << when << ": what the driver says";
#endif
      ASSERT_EQ(a.images.shape(), b.images.shape()) << when;
      EXPECT_EQ(std::memcmp(a.images.data(), b.images.data(), sizeof(float) * size_t(a.images.numel())), 0) << when;
      EXPECT_EQ(std::memcmp(a.labels.data(), b.labels.data(), sizeof(float) * size_t(a.labels.numel())), 0) << when;
      for (auto [net, batch] : {std::pair{&plain_net, &a}, std::pair{&pinned_net, &b}}) {
        net->set_input("data", batch->images);
        net->set_input("labels", batch->labels);
        net->forward_backward();
        net->update();
      }
      EXPECT_EQ(rel_error(pinned_net.output("data").to_vector(), plain_net.output("data").to_vector()), 0) << when;
      expect_same_params(plain_net, pinned_net, 0, when);
      ++batches;
    }
    EXPECT_FALSE(pinned.next(b)) << "the pinned pipeline has more batches in epoch " << epoch;
  }
  EXPECT_EQ(batches, 8);
}

}  // namespace
}  // namespace convnet::testing

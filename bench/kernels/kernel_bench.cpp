// kernel-bench: check every CUDA kernel against its CPU reference, then time it, on AlexNet-sized
// inputs (in the manner of llm.c's dev/cuda). For each kernel:
//   1. random inputs on the host; the CPU backend (cpu/cpu_ops.h) computes the reference;
//   2. the CUDA backend (cuda/cuda_ops.h) runs once on the same inputs, into an output poisoned
//      with NaN; max abs / rel error and PASS or FAIL are printed;
//   3. warm-up runs, then `--repeat` runs each bracketed by CUDA events on the compute stream;
//      the median time, the achieved bandwidth (bytes an ideal kernel reads and writes, divided
//      by the time) or TFLOP/s for GEMM, and the fraction of the card's peak are printed.
//
//   kernel-bench [--batch N] [--only NAME[,NAME...]] [--repeat N] [--warmup N] [--list]
//
// --only selects kernels whose name contains one of the given strings. Exit status: 0 when every
// check passes (or there is no GPU: "no CUDA device"), 1 when a check fails or a kernel throws,
// 2 on bad arguments.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "convnet/device.h"
#include "convnet/ops.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"

namespace cpu = convnet::cpu;
namespace cu = convnet::cuda;
using convnet::ConvGeometry;
using convnet::CostStats;
using convnet::LrnParams;
using convnet::Neuron;
using convnet::NeuronType;
using convnet::PoolGeometry;
using convnet::PoolType;

namespace {

#define CK(call)                                                                          \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess) {                                                            \
      throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorName(err_) + ": " + \
                               cudaGetErrorString(err_));                                \
    }                                                                                     \
  } while (0)

constexpr int kDevice = 0;

struct Options {
  int batch = 128;
  int repeat = 20;
  int warmup = 3;
  std::vector<std::string> only;
  bool list = false;
};

// ---- the card ----

struct Card {
  std::string name;
  int cc_major = 0, cc_minor = 0, sms = 0;
  double clock_hz = 0;      // peak SM clock
  double peak_bytes_s = 0;  // 0: unknown
  double peak_fp32 = 0;     // FLOP/s, 0: unknown
  double peak_tf32 = 0;     // dense TF32 tensor-core FLOP/s, 0: unknown
};

Card query_card() {
  Card c;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, kDevice));
  c.name = prop.name;
  c.cc_major = prop.major;
  c.cc_minor = prop.minor;
  c.sms = prop.multiProcessorCount;
  // cudaDeviceProp lost clockRate / memoryClockRate in CUDA 13: ask for the attributes, which
  // may be 0 (unknown) on some devices.
  int clock_khz = 0, mem_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, kDevice) != cudaSuccess) clock_khz = 0;
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, kDevice) != cudaSuccess) mem_khz = 0;
  if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, kDevice) != cudaSuccess)
    bus_bits = 0;
  cudaGetLastError();
  c.clock_hz = clock_khz * 1e3;
  // Double data rate: two transfers per memory clock.
  if (mem_khz > 0 && bus_bits > 0) c.peak_bytes_s = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);
  // 128 FP32 FMA units per SM per clock (Ampere through Hopper), 2 FLOP per FMA.
  if (clock_khz > 0) c.peak_fp32 = double(c.sms) * c.clock_hz * 128 * 2;
  // Dense TF32 tensor-core FLOP per SM per clock, from NVIDIA's datasheets: A100 (sm_80) 1024,
  // H100/H200 (sm_90) 2048. Other cards: unknown.
  int tf32_per_sm = 0;
  if (c.cc_major == 8 && c.cc_minor == 0) tf32_per_sm = 1024;
  if (c.cc_major == 9 && c.cc_minor == 0) tf32_per_sm = 2048;
  if (clock_khz > 0 && tf32_per_sm > 0) c.peak_tf32 = double(c.sms) * c.clock_hz * tf32_per_sm;
  return c;
}

// ---- host data ----

// xorshift64*: fast enough for the 60M-parameter buffers.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

std::vector<float> random_vector(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * r.uniform();
  return v;
}

std::vector<float> random_labels(int n, int classes, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(size_t(n), 0.f);
  for (auto& x : v) x = float(r.next() % uint64_t(classes));
  return v;
}

// ---- device buffers (plain cudaMalloc: the harness owns its memory) ----

class Buf {
 public:
  explicit Buf(size_t n) : n_(n) { CK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(float))); }
  explicit Buf(const std::vector<float>& host) : Buf(host.size()) { upload(host); }
  ~Buf() { cudaFree(p_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;

  float* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<float>& host) {
    CK(cudaMemcpy(p_, host.data(), n_ * sizeof(float), cudaMemcpyHostToDevice));
    // A pageable upload may return before the DMA lands; the kernels run on another stream.
    CK(cudaDeviceSynchronize());
  }
  // All-ones bit patterns: NaN in every element, so an element the kernel skips fails the check.
  void poison() {
    CK(cudaMemset(p_, 0xFF, n_ * sizeof(float)));
    CK(cudaDeviceSynchronize());
  }
  std::vector<float> download() const {
    CK(cudaDeviceSynchronize());
    std::vector<float> host(n_);
    CK(cudaMemcpy(host.data(), p_, n_ * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

// ---- checks ----

struct Check {
  double max_abs = 0;  // largest |got - want|
  double max_rel = 0;  // largest |got - want| / |want| over elements with |want| >= 1e-3 max|want|
  int64_t bad = 0;     // elements outside atol + rtol |want| (NaN included)
  std::string note;
  bool pass() const { return bad == 0 && note.empty(); }
};

Check compare(const std::vector<float>& got, const std::vector<float>& want, double rtol,
              double atol) {
  Check c;
  if (got.size() != want.size()) {
    c.note = "size mismatch";
    return c;
  }
  double wmax = 0;
  for (float w : want) wmax = std::max(wmax, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i], err = std::fabs(g - w);
    if (!(err <= atol + rtol * std::fabs(w))) ++c.bad;
    if (std::isnan(err)) {
      c.max_abs = std::nan("");
      continue;
    }
    if (!std::isnan(c.max_abs)) c.max_abs = std::max(c.max_abs, err);
    if (std::fabs(w) >= 1e-3 * wmax && w != 0) c.max_rel = std::max(c.max_rel, err / std::fabs(w));
  }
  return c;
}

// Merges the check of a second output into the first.
void merge(Check& a, const Check& b) {
  a.max_abs = std::isnan(a.max_abs) || std::isnan(b.max_abs) ? std::nan("") : std::max(a.max_abs, b.max_abs);
  a.max_rel = std::max(a.max_rel, b.max_rel);
  a.bad += b.bad;
  if (a.note.empty()) a.note = b.note;
}

double max_abs_of(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// ---- timing ----

// Median over `repeat` runs of `launch`, each bracketed by events on the compute stream, after
// `warmup` runs. The kernels run on cu::stream(kDevice) (see cuda_ops.h).
double time_ms(const std::function<void()>& launch, const Options& o) {
  cudaStream_t s = cu::stream(kDevice);
  for (int i = 0; i < o.warmup; ++i) launch();
  CK(cudaStreamSynchronize(s));
  CK(cudaGetLastError());
  const int n = std::max(1, o.repeat);
  std::vector<cudaEvent_t> ev(size_t(2 * n));
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < n; ++i) {
    CK(cudaEventRecord(ev[size_t(2 * i)], s));
    launch();
    CK(cudaEventRecord(ev[size_t(2 * i + 1)], s));
  }
  CK(cudaStreamSynchronize(s));
  CK(cudaGetLastError());
  std::vector<float> ms(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) CK(cudaEventElapsedTime(&ms[size_t(i)], ev[size_t(2 * i)], ev[size_t(2 * i + 1)]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return n % 2 ? ms[size_t(n / 2)] : 0.5 * (ms[size_t(n / 2 - 1)] + ms[size_t(n / 2)]);
}

// ---- results ----

struct Result {
  explicit Result(std::string n = "", std::string s = "") : name(std::move(n)), shape(std::move(s)) {}
  std::string name, shape;
  Check check;
  double ms = 0;
  double bytes = 0;  // ideal bytes read + written (memory-bound kernels)
  double flops = 0;  // GEMM
  bool tf32 = false;
  std::string error;  // the kernel threw
};

// Runs `launch` once into poisoned outputs, checks, then times it.
struct Kernel {
  std::string name;
  std::function<Result(const Options&)> run;
};

std::string dims(std::initializer_list<long long> d) {
  std::ostringstream os;
  bool first = true;
  for (long long x : d) {
    os << (first ? "" : "x") << x;
    first = false;
  }
  return os.str();
}

// ---- the kernels ----

ConvGeometry conv_geometry(int c, int h, int w, int n, int filters, int size, int stride, int pad) {
  ConvGeometry g;
  g.channels = c;
  g.height = h;
  g.width = w;
  g.batch = n;
  g.filters = filters;
  g.size = size;
  g.stride = stride;
  g.pad = pad;
  g.groups = 1;
  g.finish("kernel-bench");
  return g;
}

// Output rows per chunk as the conv layer picks them: a 256 MB column workspace.
int chunk_rows(const ConvGeometry& g) {
  const int64_t row_floats = g.col_rows() * g.out_w * g.batch;
  return int(std::clamp<int64_t>((int64_t(256) << 20) / 4 / row_floats, 1, g.out_h));
}

// Input elements the output rows [0, rows) read: the input rows their windows cover.
double input_touched(const ConvGeometry& g, int rows) {
  const int last = std::min(g.height, (rows - 1) * g.stride - g.pad + g.size);
  return double(g.channels) * std::max(0, last) * g.width * g.batch;
}

std::string conv_shape(const ConvGeometry& g, int rows) {
  std::ostringstream os;
  os << dims({g.channels, g.height, g.width, g.batch}) << " k" << g.size << "s" << g.stride << "p"
     << g.pad << " rows 0-" << rows << "/" << g.out_h;
  return os.str();
}

Result run_im2col(const Options& o, const char* name, int c, int hw, int size, int stride, int pad) {
  const ConvGeometry g = conv_geometry(c, hw, hw, o.batch, 1, size, stride, pad);
  const int rows = chunk_rows(g);
  const size_t count = size_t(g.col_rows()) * rows * g.out_w * g.batch;
  const auto x = random_vector(size_t(c) * hw * hw * g.batch, 1);
  std::vector<float> want(count);
  cpu::im2col(x.data(), g, 0, 0, rows, want.data());
  Buf dx(x), dcols(count);
  dcols.poison();
  auto launch = [&] { cu::im2col(dx.get(), g, 0, 0, rows, dcols.get()); };
  launch();
  Result r(name, conv_shape(g, rows));
  r.check = compare(dcols.download(), want, 0, 0);  // a copy: exact
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (double(count) + input_touched(g, rows));
  return r;
}

Result run_col2im(const Options& o, const char* name, int c, int hw, int size, int stride, int pad) {
  const ConvGeometry g = conv_geometry(c, hw, hw, o.batch, 1, size, stride, pad);
  const int rows = chunk_rows(g);
  const size_t count = size_t(g.col_rows()) * rows * g.out_w * g.batch;
  const auto cols = random_vector(count, 2);
  const auto dx0 = random_vector(size_t(c) * hw * hw * g.batch, 3);
  std::vector<float> want = dx0;
  cpu::col2im(cols.data(), g, 0, 0, rows, want.data());
  Buf dcols(cols), ddx(dx0);
  auto launch = [&] { cu::col2im(dcols.get(), g, 0, 0, rows, ddx.get()); };
  launch();
  Result r(name, conv_shape(g, rows));
  r.check = compare(ddx.download(), want, 1e-5, 1e-6);
  r.ms = time_ms(launch, o);  // keeps adding into dx: the same work each time
  r.bytes = 4.0 * (double(count) + 2 * input_touched(g, rows));
  return r;
}

Neuron relu() {
  Neuron n;
  n.type = NeuronType::Relu;
  return n;
}

constexpr int kC1 = 96, kHW1 = 55;  // conv1 output: 96 x 55 x 55

Result run_bias_relu(const Options& o) {
  const int64_t inner = int64_t(kHW1) * kHW1 * o.batch, n = kC1 * inner;
  const auto y0 = random_vector(size_t(n), 4), bias = random_vector(kC1, 5);
  std::vector<float> want = y0;
  cpu::bias_neuron_forward(want.data(), bias.data(), kC1, inner, relu());
  Buf dy(y0), db(bias);
  auto launch = [&] { cu::bias_neuron_forward(dy.get(), db.get(), kC1, inner, relu()); };
  launch();
  Result r("bias_relu", dims({kC1, kHW1, kHW1, o.batch}) + " in place");
  r.check = compare(dy.download(), want, 1e-5, 1e-6);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (2.0 * n + kC1);
  return r;
}

Result run_relu_bwd(const Options& o) {
  const int64_t n = int64_t(kC1) * kHW1 * kHW1 * o.batch;
  const auto x = random_vector(size_t(n), 6), dy = random_vector(size_t(n), 7);
  std::vector<float> y(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  cpu::neuron_forward(x.data(), y.data(), n, relu());
  cpu::neuron_backward(y.data(), dy.data(), want.data(), n, relu(), false);
  Buf d_y(y), d_dy(dy), d_dx(static_cast<size_t>(n));
  d_dx.poison();
  auto launch = [&] { cu::neuron_backward(d_y.get(), d_dy.get(), d_dx.get(), n, relu(), false); };
  launch();
  Result r("relu_bwd", dims({kC1, kHW1, kHW1, o.batch}));
  r.check = compare(d_dx.download(), want, 1e-6, 0);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 3 * n;
  return r;
}

Result run_bias_bwd(const Options& o) {
  const int64_t inner = int64_t(kHW1) * kHW1 * o.batch, n = kC1 * inner;
  const auto dy = random_vector(size_t(n), 8);
  std::vector<float> want(kC1);
  cpu::bias_backward(dy.data(), want.data(), kC1, inner, false);
  Buf d_dy(dy), d_db(kC1);
  d_db.poison();
  auto launch = [&] { cu::bias_backward(d_dy.get(), d_db.get(), kC1, inner, false); };
  launch();
  Result r("bias_bwd", dims({kC1, kHW1, kHW1, o.batch}) + " -> 96");
  r.check = compare(d_db.download(), want, 1e-4, 1e-6 + 2e-7 * double(inner));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (double(n) + kC1);
  return r;
}

Result run_lrn_fwd(const Options& o) {
  const int64_t inner = int64_t(kHW1) * kHW1 * o.batch, n = kC1 * inner;
  const LrnParams p;  // AlexNet: size 5, k 2, alpha 1e-4, beta 0.75
  const auto x = random_vector(size_t(n), 9, 0.f, 20.f);  // after a ReLU, realistic magnitudes
  std::vector<float> y(static_cast<size_t>(n)), denom(static_cast<size_t>(n));
  cpu::lrn_forward(x.data(), y.data(), denom.data(), kC1, inner, p);
  Buf d_x(x), d_y(static_cast<size_t>(n)), d_d(static_cast<size_t>(n));
  d_y.poison();
  d_d.poison();
  auto launch = [&] { cu::lrn_forward(d_x.get(), d_y.get(), d_d.get(), kC1, inner, p); };
  launch();
  Result r("lrn_fwd", dims({kC1, kHW1, kHW1, o.batch}) + " size 5");
  r.check = compare(d_y.download(), y, 1e-5, 1e-6);
  merge(r.check, compare(d_d.download(), denom, 1e-5, 1e-6));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 3 * n;
  return r;
}

Result run_lrn_bwd(const Options& o) {
  const int64_t inner = int64_t(kHW1) * kHW1 * o.batch, n = kC1 * inner;
  const LrnParams p;
  const auto x = random_vector(size_t(n), 10, 0.f, 20.f), dy = random_vector(size_t(n), 11);
  std::vector<float> y(static_cast<size_t>(n)), denom(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  cpu::lrn_forward(x.data(), y.data(), denom.data(), kC1, inner, p);
  cpu::lrn_backward(x.data(), y.data(), denom.data(), dy.data(), want.data(), kC1, inner, p, false);
  Buf d_x(x), d_y(y), d_d(denom), d_dy(dy), d_dx(static_cast<size_t>(n));
  d_dx.poison();
  auto launch = [&] {
    cu::lrn_backward(d_x.get(), d_y.get(), d_d.get(), d_dy.get(), d_dx.get(), kC1, inner, p, false);
  };
  launch();
  Result r("lrn_bwd", dims({kC1, kHW1, kHW1, o.batch}) + " size 5");
  r.check = compare(d_dx.download(), want, 1e-4, 1e-5 * max_abs_of(want));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 5 * n;
  return r;
}

PoolGeometry pool1(int batch) {
  PoolGeometry g;
  g.type = PoolType::Max;
  g.channels = kC1;
  g.height = g.width = kHW1;
  g.batch = batch;
  g.size = 3;
  g.stride = 2;
  g.finish("kernel-bench");
  return g;
}

Result run_pool_fwd(const Options& o) {
  const PoolGeometry g = pool1(o.batch);
  const size_t nx = size_t(kC1) * kHW1 * kHW1 * o.batch, ny = size_t(kC1) * g.out_h * g.out_w * o.batch;
  const auto x = random_vector(nx, 12);
  std::vector<float> want(ny);
  cpu::pool_forward(x.data(), want.data(), g);
  Buf d_x(x), d_y(ny);
  d_y.poison();
  auto launch = [&] { cu::pool_forward(d_x.get(), d_y.get(), g); };
  launch();
  Result r("maxpool_fwd", dims({kC1, kHW1, kHW1, o.batch}) + " 3/2 -> " + std::to_string(g.out_h));
  r.check = compare(d_y.download(), want, 0, 0);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * double(nx + ny);
  return r;
}

Result run_pool_bwd(const Options& o) {
  const PoolGeometry g = pool1(o.batch);
  const size_t nx = size_t(kC1) * kHW1 * kHW1 * o.batch, ny = size_t(kC1) * g.out_h * g.out_w * o.batch;
  const auto x = random_vector(nx, 13), dy = random_vector(ny, 14);
  std::vector<float> y(ny), want(nx);
  cpu::pool_forward(x.data(), y.data(), g);
  cpu::pool_backward(x.data(), y.data(), dy.data(), want.data(), g, false);
  Buf d_x(x), d_y(y), d_dy(dy), d_dx(nx);
  d_dx.poison();
  auto launch = [&] { cu::pool_backward(d_x.get(), d_y.get(), d_dy.get(), d_dx.get(), g, false); };
  launch();
  Result r("maxpool_bwd", dims({kC1, kHW1, kHW1, o.batch}) + " 3/2 -> " + std::to_string(g.out_h));
  r.check = compare(d_dx.download(), want, 1e-5, 1e-6);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * double(2 * nx + 2 * ny);  // read x, y, dy; write dx
  return r;
}

// LRN then max pooling, backward in one kernel (or, two_kernels, the two the net runs with fusion
// off), against the CPU's two passes. Bytes: what the fused kernel must move (x, y, denom read and
// dx written at the LRN's size; the pooled gradient read); the two kernels move 2 more LRN-sized
// arrays (the gradient of y, written then read).
Result run_lrn_pool_bwd(const Options& o, bool two_kernels) {
  const PoolGeometry g = pool1(o.batch);
  const int64_t inner = int64_t(kHW1) * kHW1 * o.batch, n = kC1 * inner;
  const size_t ny = size_t(kC1) * g.out_h * g.out_w * o.batch;
  const LrnParams p;
  const auto x = random_vector(size_t(n), 20, 0.f, 20.f), dpooled = random_vector(ny, 21);
  std::vector<float> y(static_cast<size_t>(n)), denom(static_cast<size_t>(n)), pooled(ny),
      dy(static_cast<size_t>(n)), want(static_cast<size_t>(n));
  cpu::lrn_forward(x.data(), y.data(), denom.data(), kC1, inner, p);
  cpu::pool_forward(y.data(), pooled.data(), g);
  cpu::pool_backward(y.data(), pooled.data(), dpooled.data(), dy.data(), g, false);
  cpu::lrn_backward(x.data(), y.data(), denom.data(), dy.data(), want.data(), kC1, inner, p, false);
  Buf d_x(x), d_y(y), d_d(denom), d_dp(dpooled), d_dx(static_cast<size_t>(n)),
      d_dy(two_kernels ? static_cast<size_t>(n) : 1);
  d_dx.poison();
  auto launch = [&] {
    if (two_kernels) {  // what the net runs with fusion off
      cu::pool_backward(d_y.get(), nullptr, d_dp.get(), d_dy.get(), g, false);
      cu::lrn_backward(d_x.get(), d_y.get(), d_d.get(), d_dy.get(), d_dx.get(), kC1, inner, p, false);
    } else {
      cu::lrn_pool_backward(d_x.get(), d_y.get(), d_d.get(), d_dp.get(), d_dx.get(), p, g, false);
    }
  };
  launch();
  Result r(two_kernels ? "lrn_maxpool_bwd_2k" : "lrn_maxpool_bwd",
           dims({kC1, kHW1, kHW1, o.batch}) + " size 5, 3/2" + (two_kernels ? ", two kernels" : ""));
  r.check = compare(d_dx.download(), want, 1e-4, 1e-5 * max_abs_of(want));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (4.0 * double(n) + double(ny) + (two_kernels ? 2.0 * double(n) : 0.0));
  return r;
}

Result run_dropout(const Options& o) {
  const int64_t n = int64_t(4096) * o.batch;
  auto in = random_vector(size_t(n), 15, 0.25f, 1.25f);  // nonzero: a zero output is a dropped unit
  std::vector<float> want(static_cast<size_t>(n));
  cpu::dropout_apply(in.data(), want.data(), n, 0.5f, 1234, 7, false, 0, 0, 0);
  Buf d_in(in), d_out(static_cast<size_t>(n));
  d_out.poison();
  auto launch = [&] { cu::dropout_apply(d_in.get(), d_out.get(), n, 0.5f, 1234, 7, false, 0, 0, 0); };
  launch();
  Result r("dropout", dims({4096, o.batch}) + " rate 0.5");
  r.check = compare(d_out.download(), want, 1e-6, 0);  // the mask must be exactly the CPU's
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 2 * n;
  return r;
}

Result run_softmax_fwd(const Options& o) {
  const int K = 1000, N = o.batch;
  const size_t n = size_t(K) * N;
  const auto logits = random_vector(n, 16, -6.f, 6.f);
  const auto labels = random_labels(N, K, 17);
  std::vector<float> want(n);
  std::vector<double> want_cost(static_cast<size_t>(N));
  std::vector<int32_t> want_flags(static_cast<size_t>(N));
  cpu::softmax_cost_forward(logits.data(), labels.data(), want.data(), K, N, want_cost.data(),
                            want_flags.data());
  const CostStats ws = cpu::sum_cost_cases(want_cost.data(), want_flags.data(), N);
  // Per-case results: N doubles then N int32 flags, as ops.h's cost_cases_floats lays them out.
  Buf d_l(logits), d_y(labels), d_p(n), d_cases(3 * static_cast<size_t>(N));
  d_p.poison();
  auto launch = [&] {
    cu::softmax_cost_forward(d_l.get(), d_y.get(), d_p.get(), K, N,
                             reinterpret_cast<double*>(d_cases.get()),
                             reinterpret_cast<int32_t*>(d_cases.get() + 2 * N));
  };
  launch();
  const std::vector<float> cases = d_cases.download();
  const CostStats gs = cpu::sum_cost_cases(reinterpret_cast<const double*>(cases.data()),
                                           reinterpret_cast<const int32_t*>(cases.data() + 2 * N), N);
  Result r("softmax_cost_fwd", dims({K, N}));
  r.check = compare(d_p.download(), want, 1e-5, 1e-8);
  if (gs.top1_errors != ws.top1_errors || gs.top5_errors != ws.top5_errors ||
      !(std::fabs(gs.cost_sum - ws.cost_sum) <= 1e-5 * std::fabs(ws.cost_sum) + 1e-6)) {
    std::ostringstream os;
    os << "stats: top1 " << gs.top1_errors << " vs " << ws.top1_errors << ", top5 "
       << gs.top5_errors << " vs " << ws.top5_errors << ", cost " << gs.cost_sum << " vs "
       << ws.cost_sum;
    r.check.note = os.str();
  }
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (2.0 * double(n) + N) + 12.0 * N;
  return r;
}

Result run_softmax_bwd(const Options& o) {
  const int K = 1000, N = o.batch;
  const size_t n = size_t(K) * N;
  const auto logits = random_vector(n, 18, -6.f, 6.f);
  const auto labels = random_labels(N, K, 19);
  std::vector<float> probs(n), want(n);
  std::vector<double> case_cost(static_cast<size_t>(N));
  std::vector<int32_t> case_flags(static_cast<size_t>(N));
  cpu::softmax_cost_forward(logits.data(), labels.data(), probs.data(), K, N, case_cost.data(),
                            case_flags.data());
  const float scale = 1.f / float(N);
  cpu::softmax_cost_backward(probs.data(), labels.data(), scale, want.data(), K, N, false);
  Buf d_p(probs), d_y(labels), d_d(n);
  d_d.poison();
  auto launch = [&] { cu::softmax_cost_backward(d_p.get(), d_y.get(), scale, d_d.get(), K, N, false); };
  launch();
  Result r("softmax_cost_bwd", dims({K, N}));
  r.check = compare(d_d.download(), want, 1e-5, 1e-9);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * (2.0 * double(n) + N);
  return r;
}

Result run_sgd(const Options& o) {
  const int64_t n = 60965224;  // AlexNet-2012's parameters
  const auto w0 = random_vector(size_t(n), 20), g = random_vector(size_t(n), 21),
             v0 = random_vector(size_t(n), 22, -0.01f, 0.01f);
  std::vector<float> w = w0, v = v0;
  cpu::sgd_update(w.data(), g.data(), v.data(), n, 0.01f, 0.9f, 0.0005f);
  Buf d_w(w0), d_g(g), d_v(v0);
  auto launch = [&] { cu::sgd_update(d_w.get(), d_g.get(), d_v.get(), n, 0.01f, 0.9f, 0.0005f); };
  launch();
  Result r("sgd_update", std::to_string(n) + " params");
  r.check = compare(d_w.download(), w, 1e-5, 1e-8);
  merge(r.check, compare(d_v.download(), v, 1e-5, 1e-8));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 5 * double(n);  // read w, g, v; write w, v
  return r;
}

Result run_nesterov(const Options& o) {
  const int64_t n = 60965224;
  const auto w0 = random_vector(size_t(n), 25), g = random_vector(size_t(n), 26),
             v0 = random_vector(size_t(n), 27, -0.01f, 0.01f);
  std::vector<float> w = w0, v = v0;
  cpu::nesterov_update(w.data(), g.data(), v.data(), n, 0.01f, 0.9f, 0.0005f);
  Buf d_w(w0), d_g(g), d_v(v0);
  auto launch = [&] { cu::nesterov_update(d_w.get(), d_g.get(), d_v.get(), n, 0.01f, 0.9f, 0.0005f); };
  launch();
  Result r("nesterov_update", std::to_string(n) + " params");
  r.check = compare(d_w.download(), w, 1e-5, 1e-8);
  merge(r.check, compare(d_v.download(), v, 1e-5, 1e-8));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 5 * double(n);  // read w, g, v; write w, v
  return r;
}

Result run_adamw(const Options& o) {
  const int64_t n = 60965224;
  const auto w0 = random_vector(size_t(n), 28), g = random_vector(size_t(n), 29),
             m0 = random_vector(size_t(n), 30, -0.01f, 0.01f), v0 = random_vector(size_t(n), 31, 0.f, 0.01f);
  std::vector<float> w = w0, m = m0, v = v0;
  // Step 3 of lr 1e-3, decay 0.01, betas (0.9, 0.999), eps 1e-8 (what ops.cpp passes the kernels).
  const float keep = float(1.0 - 1e-3 * 0.01), step_size = float(1e-3 / (1.0 - 0.729)),
              inv_bc2 = float(1.0 / std::sqrt(1.0 - std::pow(0.999, 3)));
  cpu::adamw_update(w.data(), g.data(), m.data(), v.data(), n, keep, step_size, inv_bc2, 0.9f, 0.1f,
                    0.999f, 0.001f, 1e-8f);
  Buf d_w(w0), d_g(g), d_m(m0), d_v(v0);
  auto launch = [&] {
    cu::adamw_update(d_w.get(), d_g.get(), d_m.get(), d_v.get(), n, keep, step_size, inv_bc2, 0.9f, 0.1f,
                     0.999f, 0.001f, 1e-8f);
  };
  launch();
  Result r("adamw_update", std::to_string(n) + " params");
  r.check = compare(d_w.download(), w, 1e-5, 1e-7);
  merge(r.check, compare(d_m.download(), m, 1e-5, 1e-8));
  merge(r.check, compare(d_v.download(), v, 1e-5, 1e-9));
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 7 * double(n);  // read w, g, m, v; write w, m, v
  return r;
}

Result run_axpby(const Options& o) {
  const int64_t n = int64_t(kC1) * kHW1 * kHW1 * o.batch;
  const auto src = random_vector(size_t(n), 23), dst0 = random_vector(size_t(n), 24);
  std::vector<float> want = dst0;
  cpu::axpby(0.5f, src.data(), want.data(), n, true);
  Buf d_s(src), d_d(dst0);
  auto launch = [&] { cu::axpby(0.5f, d_s.get(), d_d.get(), n, true); };
  launch();
  Result r("axpby_acc", dims({kC1, kHW1, kHW1, o.batch}));
  r.check = compare(d_d.download(), want, 1e-6, 1e-7);
  r.ms = time_ms(launch, o);
  r.bytes = 4.0 * 3 * double(n);
  return r;
}

// Row-major C (m x n) = op(A) op(B), the shapes of AlexNet's conv2 (one tower: 48 -> 128 channels,
// 5x5, on 27x27): forward W (128 x 1200) * cols (1200 x 27*27*N); weight gradient dY * cols^T;
// input gradient W^T * dY.
Result run_gemm(const Options& o, const char* name, bool ta, bool tb, int m, int n, int k, bool tf32) {
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  const auto a = random_vector(size_t(a_rows) * a_cols, 25), b = random_vector(size_t(b_rows) * b_cols, 26);
  std::vector<float> want(size_t(m) * n);
  cpu::gemm(ta, tb, m, n, k, 1.f, a.data(), a_cols, b.data(), b_cols, 0.f, want.data(), n);
  Buf d_a(a), d_b(b), d_c(size_t(m) * n);
  d_c.poison();
  cu::set_device(kDevice);
  cu::set_math_mode(kDevice, tf32 ? cu::MathMode::Tf32 : cu::MathMode::Fp32);
  auto launch = [&] {
    cu::gemm(ta, tb, m, n, k, 1.f, d_a.get(), a_cols, d_b.get(), b_cols, 0.f, d_c.get(), n);
  };
  Result r(name, "");
  try {
    launch();
    std::ostringstream os;
    os << "m" << m << " n" << n << " k" << k << " " << (ta ? 'T' : 'N') << (tb ? 'T' : 'N');
    r.shape = os.str();
    const double scale = max_abs_of(want);
    // fp32: rounding of long dot products; tf32: 10-bit mantissa inputs (a sanity check).
    r.check = tf32 ? compare(d_c.download(), want, 1e-2, 1e-2 * scale)
                   : compare(d_c.download(), want, 1e-4, 1e-4 * scale);
    r.ms = time_ms(launch, o);
  } catch (...) {
    cu::set_math_mode(kDevice, cu::MathMode::Fp32);
    throw;
  }
  cu::set_math_mode(kDevice, cu::MathMode::Fp32);
  r.flops = 2.0 * m * n * k;
  r.tf32 = tf32;
  return r;
}

std::vector<Kernel> kernels() {
  std::vector<Kernel> ks;
  // conv1: 3x224x224 -> 96x55x55, k11 s4 p2; conv2 (one tower): 48x27x27, k5 s1 p2.
  ks.push_back({"im2col_conv1", [](const Options& o) { return run_im2col(o, "im2col_conv1", 3, 224, 11, 4, 2); }});
  ks.push_back({"col2im_conv1", [](const Options& o) { return run_col2im(o, "col2im_conv1", 3, 224, 11, 4, 2); }});
  ks.push_back({"im2col_conv2", [](const Options& o) { return run_im2col(o, "im2col_conv2", 48, 27, 5, 1, 2); }});
  ks.push_back({"col2im_conv2", [](const Options& o) { return run_col2im(o, "col2im_conv2", 48, 27, 5, 1, 2); }});
  ks.push_back({"bias_relu", run_bias_relu});
  ks.push_back({"relu_bwd", run_relu_bwd});
  ks.push_back({"bias_bwd", run_bias_bwd});
  ks.push_back({"lrn_fwd", run_lrn_fwd});
  ks.push_back({"lrn_bwd", run_lrn_bwd});
  ks.push_back({"maxpool_fwd", run_pool_fwd});
  ks.push_back({"maxpool_bwd", run_pool_bwd});
  ks.push_back({"lrn_maxpool_bwd", [](const Options& o) { return run_lrn_pool_bwd(o, false); }});
  ks.push_back({"lrn_maxpool_bwd_2k", [](const Options& o) { return run_lrn_pool_bwd(o, true); }});
  ks.push_back({"dropout", run_dropout});
  ks.push_back({"softmax_cost_fwd", run_softmax_fwd});
  ks.push_back({"softmax_cost_bwd", run_softmax_bwd});
  ks.push_back({"sgd_update", run_sgd});
  ks.push_back({"nesterov_update", run_nesterov});
  ks.push_back({"adamw_update", run_adamw});
  ks.push_back({"axpby_acc", run_axpby});
  const int F = 128, K2 = 48 * 5 * 5;
  auto cols = [](const Options& o) { return 27 * 27 * o.batch; };
  for (bool tf32 : {false, true}) {
    const std::string sfx = tf32 ? "_tf32" : "_fp32";
    ks.push_back({"sgemm_conv2_fwd" + sfx, [=](const Options& o) {
                    return run_gemm(o, tf32 ? "sgemm_conv2_fwd_tf32" : "sgemm_conv2_fwd_fp32",
                                    false, false, F, cols(o), K2, tf32);
                  }});
    ks.push_back({"sgemm_conv2_dW" + sfx, [=](const Options& o) {
                    return run_gemm(o, tf32 ? "sgemm_conv2_dW_tf32" : "sgemm_conv2_dW_fp32",
                                    false, true, F, K2, cols(o), tf32);
                  }});
    ks.push_back({"sgemm_conv2_dX" + sfx, [=](const Options& o) {
                    return run_gemm(o, tf32 ? "sgemm_conv2_dX_tf32" : "sgemm_conv2_dX_fp32",
                                    true, false, K2, cols(o), F, tf32);
                  }});
  }
  return ks;
}

// ---- main ----

void usage(FILE* f) {
  std::fprintf(f,
               "usage: kernel-bench [--batch N] [--only NAME[,NAME...]] [--repeat N] [--warmup N] [--list]\n"
               "  Checks each CUDA kernel against the CPU backend on AlexNet-sized inputs, then\n"
               "  times it (median of --repeat runs after --warmup runs, CUDA events).\n"
               "  --only keeps kernels whose name contains one of the given strings.\n");
}

bool parse_int(const char* s, int& out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (!s[0] || *end || v <= 0 || v > (1 << 20)) return false;
  out = int(v);
  return true;
}

bool selected(const Options& o, const std::string& name) {
  if (o.only.empty()) return true;
  for (const auto& s : o.only)
    if (name.find(s) != std::string::npos) return true;
  return false;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kernel-bench: %s needs a value\n", what);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--batch") {
      if (!parse_int(value("--batch"), o.batch)) { std::fprintf(stderr, "kernel-bench: bad --batch\n"); return 2; }
    } else if (a == "--repeat") {
      if (!parse_int(value("--repeat"), o.repeat)) { std::fprintf(stderr, "kernel-bench: bad --repeat\n"); return 2; }
    } else if (a == "--warmup") {
      const char* v = value("--warmup");
      if (std::strcmp(v, "0") == 0) o.warmup = 0;
      else if (!parse_int(v, o.warmup)) { std::fprintf(stderr, "kernel-bench: bad --warmup\n"); return 2; }
    } else if (a == "--only") {
      std::stringstream ss(value("--only"));
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) o.only.push_back(item);
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "kernel-bench: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }

  const auto all = kernels();
  if (o.list) {
    for (const auto& k : all) std::printf("%s\n", k.name.c_str());
    return 0;
  }
  std::vector<const Kernel*> chosen;
  for (const auto& k : all)
    if (selected(o, k.name)) chosen.push_back(&k);
  if (chosen.empty()) {
    std::fprintf(stderr, "kernel-bench: --only matches no kernel (see --list)\n");
    return 2;
  }

  if (convnet::cuda_device_count() == 0) {
    std::printf("no CUDA device: nothing to check or time\n");
    return 0;
  }

  Card card;
  try {
    cu::set_device(kDevice);
    card = query_card();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel-bench: %s\n", e.what());
    return 1;
  }
  std::printf("device: %s (sm_%d%d, %d SMs, %.0f MHz)\n", card.name.c_str(), card.cc_major,
              card.cc_minor, card.sms, card.clock_hz / 1e6);
  std::printf("peak: memory %s GB/s, fp32 %s TFLOP/s, tf32 tensor %s TFLOP/s\n",
              card.peak_bytes_s > 0 ? fmt("%.0f", card.peak_bytes_s / 1e9).c_str() : "n/a",
              card.peak_fp32 > 0 ? fmt("%.1f", card.peak_fp32 / 1e12).c_str() : "n/a",
              card.peak_tf32 > 0 ? fmt("%.0f", card.peak_tf32 / 1e12).c_str() : "n/a");
  std::printf("batch %d, median of %d runs after %d warm-up, CPU reference: %s (%d threads)\n\n",
              o.batch, o.repeat, o.warmup, cpu::blas_name(), cpu::num_threads());

  std::vector<Result> results;
  bool failed = false;
  for (const Kernel* k : chosen) {
    std::fprintf(stderr, "running %s...\n", k->name.c_str());
    Result r;
    try {
      cu::set_device(kDevice);
      r = k->run(o);
    } catch (const std::exception& e) {
      r = Result(k->name);
      r.error = e.what();
      cudaGetLastError();  // clear a non-sticky error so the next kernel runs
    }
    if (!r.error.empty() || !r.check.pass()) failed = true;
    results.push_back(r);
    // One line per kernel as it finishes (the table follows at the end).
    std::fprintf(stderr, "  %s: %s\n", r.name.c_str(),
                 !r.error.empty() ? ("ERROR " + r.error).c_str()
                 : r.check.pass() ? "PASS"
                                  : "FAIL");
  }

  std::printf("%-22s %-34s %10s %10s %6s %10s %12s %8s\n", "kernel", "shape", "max abs", "max rel",
              "check", "ms", "throughput", "of peak");
  std::printf("%s\n", std::string(118, '-').c_str());
  for (const Result& r : results) {
    if (!r.error.empty()) {
      std::printf("%-22s ERROR: %s\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    std::string thr = "n/a", frac = "n/a";
    if (r.ms > 0 && r.flops > 0) {
      const double fs = r.flops / (r.ms * 1e-3);
      thr = fmt("%.2f TF/s", fs / 1e12);
      const double peak = r.tf32 ? card.peak_tf32 : card.peak_fp32;
      if (peak > 0) frac = fmt("%.1f%%", 100.0 * fs / peak);
    } else if (r.ms > 0 && r.bytes > 0) {
      const double bs = r.bytes / (r.ms * 1e-3);
      thr = fmt("%.0f GB/s", bs / 1e9);
      if (card.peak_bytes_s > 0) frac = fmt("%.1f%%", 100.0 * bs / card.peak_bytes_s);
    }
    std::printf("%-22s %-34s %10.3g %10.3g %6s %10.4f %12s %8s\n", r.name.c_str(), r.shape.c_str(),
                r.check.max_abs, r.check.max_rel, r.check.pass() ? "PASS" : "FAIL", r.ms,
                thr.c_str(), frac.c_str());
    if (!r.check.pass())
      std::printf("%-22s   %lld element(s) out of tolerance%s%s\n", "", (long long)r.check.bad,
                  r.check.note.empty() ? "" : "; ", r.check.note.c_str());
  }
  std::printf("\n%s\n", failed ? "SOME CHECKS FAILED" : "all checks passed");
  return failed ? 1 : 0;
}

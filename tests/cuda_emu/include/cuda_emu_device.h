// cuda_emu, device side: what kernel code sees when a .cu file is compiled as C++ for the
// emulator (CONVNET_CUDA=EMULATE). Every CUDA thread of a block runs as a fiber on the host;
// __syncthreads and warp shuffles switch fibers, so block and warp cooperation behave as on a GPU,
// one block at a time. Shared memory is a function-local static (blocks never overlap).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

typedef struct CUstream_st* cudaStream_t;

namespace cuda_emu {

void syncthreads();
// Swaps 8 bytes among the 32 lanes of the calling warp: lane i gets lane (i + delta)'s value
// (its own when that lane is past the warp's end), as __shfl_down_sync with a full mask.
uint64_t shfl_down_bits(uint64_t bits, int delta);

struct Config {
  dim3 grid, block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};
inline Config config(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  return Config{grid, block, shared_bytes, stream};
}

// A launched kernel: its configuration and arguments, runnable now or from a graph, and its
// arguments replaceable from a cudaKernelNodeParams array (cudaGraphExecKernelNodeSetParams).
struct Kernel {
  Config config;
  const char* where = "";
  virtual ~Kernel() = default;
  virtual void run_thread() = 0;  // the body, for ThreadState `current`
  virtual void set_args(void** params) = 0;
  virtual std::shared_ptr<Kernel> clone() const = 0;
  // Non-null pointer arguments, checked against the device allocations before every run.
  virtual void pointer_args(std::function<void(const void*, int)> check) const = 0;
  // Per parameter, '1' when the kernel's declaration lets it write through it (translate.py);
  // nullptr: unknown, every pointer may be written.
  const char* writes = nullptr;
  bool may_write(int index) const {
    if (!writes) return true;
    for (int i = 0; i <= index; ++i)
      if (!writes[i]) return true;  // shorter than the arguments: unknown
    return writes[index] == '1';
  }
};

template <class Body, class... A>
struct KernelOf : Kernel {
  Body body;
  std::tuple<A...> args;
  KernelOf(Body b, std::tuple<A...> a) : body(std::move(b)), args(std::move(a)) {}
  void run_thread() override { std::apply(body, args); }
  void set_args(void** params) override { set_from<0>(params); }
  std::shared_ptr<Kernel> clone() const override { return std::make_shared<KernelOf>(*this); }
  void pointer_args(std::function<void(const void*, int)> check) const override {
    check_from<0>(check);
  }

 private:
  template <size_t I>
  void set_from(void** params) {
    if constexpr (I < sizeof...(A)) {
      std::memcpy(static_cast<void*>(&std::get<I>(args)), params[I], sizeof(std::get<I>(args)));
      set_from<I + 1>(params);
    }
  }
  template <size_t I>
  void check_from(const std::function<void(const void*, int)>& check) const {
    if constexpr (I < sizeof...(A)) {
      using T = std::tuple_element_t<I, std::tuple<A...>>;
      if constexpr (std::is_pointer_v<T>)
        if (std::get<I>(args)) check(static_cast<const void*>(std::get<I>(args)), int(I));
      check_from<I + 1>(check);
    }
  }
};

// Runs the kernel now, or records it when its stream is being captured into a graph.
void submit(std::shared_ptr<Kernel> kernel);

// What `kernel<<<grid, block, shared, stream>>>(args...)` becomes (translate.py).
template <class Body, class... A>
void launch(const char* where, const char* writes, Config c, Body body, A&&... args) {
  auto k = std::make_shared<KernelOf<Body, std::decay_t<A>...>>(
      std::move(body), std::tuple<std::decay_t<A>...>(std::forward<A>(args)...));
  k->config = c;
  k->where = where;
  k->writes = writes;
  submit(std::move(k));
}

}  // namespace cuda_emu

// The running thread's coordinates: the scheduler sets them before it switches to a fiber.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

template <class T>
T __shfl_down_sync(unsigned /*mask*/, T value, int delta) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::cuda_emu::shfl_down_bits(bits, delta);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// CUDA's integer min and max (device code calls them unqualified).
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// The _rn intrinsics round on their own: nvcc never fuses them into an FMA. Elsewhere both
// compilers contract a * b + c (nvcc by default, g++ with -march giving FMA), so the emulated
// kernels round like the real ones. The empty asm makes the result opaque, so g++ cannot fuse it.
inline float cuda_emu_rounded(float r) {
  asm("" : "+x"(r));
  return r;
}
inline float __fmul_rn(float a, float b) { return cuda_emu_rounded(a * b); }
inline float __fadd_rn(float a, float b) { return cuda_emu_rounded(a + b); }
inline float __fsub_rn(float a, float b) { return cuda_emu_rounded(a - b); }
inline float __fdiv_rn(float a, float b) { return cuda_emu_rounded(a / b); }
inline float __frcp_rn(float a) { return cuda_emu_rounded(1.f / a); }
inline float rsqrtf(float a) { return 1.f / std::sqrt(a); }

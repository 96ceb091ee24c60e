// The emulator's own tests: that it runs kernels as a GPU would (barriers, warp shuffles, grid
// and block coordinates, graphs that only run when launched, patched kernel arguments) and that
// it refuses what a GPU would (host pointers in kernels, barriers not every thread reaches,
// copies out of bounds, synchronising a stream that is being captured). Built only with
// CONVNET_CUDA=EMULATE, translated like the backend's own .cu files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/cuda_ops.h"  // the caching allocator, whose blocks an ASan build poisons

namespace {

__global__ void coordinates_kernel(int* out) {
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int b = blockIdx.x + gridDim.x * blockIdx.y;
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

// Each block: a block-wide sum through shared memory and barriers, and warp 1's sum by shuffles.
__global__ void sums_kernel(const float* x, float* block_sums, float* warp1_sums) {
  __shared__ float cache[128];
  const int t = threadIdx.x;
  const float v = x[blockIdx.x * 128 + t];
  cache[t] = v;
  __syncthreads();
  for (int half = 64; half > 0; half /= 2) {
    if (t < half) cache[t] += cache[t + half];
    __syncthreads();
  }
  if (t == 0) block_sums[blockIdx.x] = cache[0];
  if (t / 32 == 1) {  // only warp 1 shuffles
    float s = v;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (t == 32) warp1_sums[blockIdx.x] = s;
  }
}

__global__ void half_barrier_kernel(float* out) {
  if (threadIdx.x < 16) __syncthreads();  // a deadlock on a GPU
  out[threadIdx.x] = 1.f;
}

__global__ void scale_kernel(float* x, int n, float factor) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= factor;
}

template <class T>
T* device_array(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

// After every stream of the device has finished (the legacy stream waits for none of the
// non-blocking ones: without the synchronisation the stream-order checker reports a race).
template <class T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
  return h;
}

TEST(CudaEmu, ThreadAndBlockCoordinates) {
  int* out = device_array<int>(6 * 24);
  coordinates_kernel<<<dim3(3, 2), dim3(4, 3, 2)>>>(out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = to_host(out, 6 * 24);
  for (int b = 0; b < 6; ++b)
    for (int t = 0; t < 24; ++t) EXPECT_EQ(got[size_t(b * 24 + t)], b * 1000 + t);
  cudaFree(out);
}

TEST(CudaEmu, BarriersAndWarpShufflesCooperate) {
  std::vector<float> x(3 * 128);
  std::iota(x.begin(), x.end(), 1.f);
  float* dx = device_array<float>(x.size());
  float* sums = device_array<float>(3);
  float* warp1 = device_array<float>(3);
  ASSERT_EQ(cudaMemcpyAsync(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice, nullptr), cudaSuccess);
  sums_kernel<<<3, 128>>>(dx, sums, warp1);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> s = to_host(sums, 3), w = to_host(warp1, 3);
  for (int b = 0; b < 3; ++b) {
    const float first = float(b * 128 + 1);
    EXPECT_EQ(s[size_t(b)], 128 * first + 127 * 128 / 2) << "block " << b;
    EXPECT_EQ(w[size_t(b)], 32 * (first + 32) + 31 * 32 / 2) << "warp 1 of block " << b;
  }
  cudaFree(dx);
  cudaFree(sums);
  cudaFree(warp1);
}

TEST(CudaEmu, BarrierNotReachedByEveryThreadIsADeadlock) {
  float* out = device_array<float>(32);
  try {
    half_barrier_kernel<<<1, 32>>>(out);
    FAIL() << "no error for a __syncthreads that half the block skips";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("exited without reaching a __syncthreads"), std::string::npos)
        << e.what();
  }
  cudaFree(out);
}

TEST(CudaEmu, KernelArgumentsMustBeMemoryOfTheDevice) {
  std::vector<float> host(8, 1.f);
  try {
    scale_kernel<<<1, 8>>>(host.data(), 8, 2.f);
    FAIL() << "a host pointer reached a kernel";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 0 points to memory no cudaMalloc returned"),
              std::string::npos) << e.what();
  }
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  float* on1 = device_array<float>(8);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  try {
    scale_kernel<<<1, 8>>>(on1, 8, 2.f);
    FAIL() << "memory of cuda:1 reached a kernel on cuda:0";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("memory of cuda:1, not to memory of cuda:0"),
              std::string::npos) << e.what();
  }
  cudaFree(on1);
}

// Two streams writing one buffer: on a GPU their kernels may run in either order unless an event
// orders them. The emulator runs them in program order, so without its stream-order checker a
// missing wait would pass here; with it, the second launch is reported as the race it is, and
// the same launches ordered by an event, or by the host's synchronisation, are accepted.
TEST(CudaEmu, AMissingEventWaitIsCaught) {
  cudaStream_t a = nullptr, b = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  float* d = device_array<float>(4);
  scale_kernel<<<1, 4, 0, a>>>(d, 4, 2.f);
  try {
    scale_kernel<<<1, 4, 0, b>>>(d, 4, 3.f);
    FAIL() << "a kernel on stream b used what stream a's kernel writes, with nothing ordering them";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("with no event wait or synchronisation between them"), std::string::npos)
        << e.what();
  }
  cudaEvent_t done = nullptr;
  ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
  scale_kernel<<<1, 4, 0, a>>>(d, 4, 2.f);
  ASSERT_EQ(cudaEventRecord(done, a), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(b, done, 0), cudaSuccess);
  EXPECT_NO_THROW((scale_kernel<<<1, 4, 0, b>>>(d, 4, 3.f))) << "ordered by the event";
  ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
  EXPECT_NO_THROW((scale_kernel<<<1, 4, 0, a>>>(d, 4, 2.f))) << "ordered by the host's synchronisation";
  // A copy on the host's default stream reading what stream a writes, unsynchronised.
  std::vector<float> h(4);
  try {
    cudaMemcpyAsync(h.data(), d, 16, cudaMemcpyDeviceToHost, nullptr);
    FAIL() << "a default-stream copy read a non-blocking stream's output without a synchronisation";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("memcpy on the host's default stream"), std::string::npos) << e.what();
  }
  ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  EXPECT_NO_THROW(cudaMemcpyAsync(h.data(), d, 16, cudaMemcpyDeviceToHost, nullptr));
  cudaEventDestroy(done);
  cudaFree(d);
}

TEST(CudaEmu, BadConfigurationsAndCopiesAreErrors) {
  float* d = device_array<float>(8);
  scale_kernel<<<1, 2048>>>(d, 8, 2.f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error is reported once";
  std::vector<float> host(16);
  EXPECT_EQ(cudaMemcpyAsync(d, host.data(), 16 * 4, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue)
      << "a copy past the allocation's end";
  EXPECT_EQ(cudaMemcpyAsync(host.data(), d, 8 * 4, cudaMemcpyHostToDevice, nullptr), cudaErrorInvalidValue)
      << "the kind does not match the pointers";
  int x = 0;
  EXPECT_EQ(cudaFree(&x), cudaErrorInvalidValue);
  cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmu, CaptureRecordsAndLaunchRunsWithPatchedArguments) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  std::vector<float> ones(4, 1.f);
  float* d = device_array<float>(4);
  ASSERT_EQ(cudaMemcpyAsync(d, ones.data(), 16, cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  scale_kernel<<<1, 4, 0, s>>>(d, 4, 3.f);
  cudaStreamCaptureStatus status;
  const cudaGraphNode_t* deps = nullptr;
  size_t count = 0;
  ASSERT_EQ(cudaStreamGetCaptureInfo(s, &status, nullptr, nullptr, &deps, &count), cudaSuccess);
  ASSERT_EQ(status, cudaStreamCaptureStatusActive);
  ASSERT_EQ(count, 1u);
  const cudaGraphNode_t node = deps[0];
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(to_host(d, 4), ones) << "a captured kernel ran before the graph was launched";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(to_host(d, 4), std::vector<float>(4, 3.f));
  float* ptr = d;
  int n = 4;
  float factor = 0.5f;
  void* args[] = {&ptr, &n, &factor};
  cudaKernelNodeParams p = {};
  p.gridDim = dim3(1);
  p.blockDim = dim3(4);
  p.kernelParams = args;
  ASSERT_EQ(cudaGraphExecKernelNodeSetParams(exec, node, &p), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(to_host(d, 4), std::vector<float>(4, 1.5f)) << "the patched factor 0.5";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(d);
}

TEST(CudaEmu, SynchronisingACapturedStreamInvalidatesTheCapture) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  cudaGetLastError();
}

// Reads the other thread's shared value with no barrier in between: a race on a GPU.
__global__ void racy_kernel(int* out) {
  __shared__ int s[2];
  s[threadIdx.x] = int(threadIdx.x) + 1;
  out[threadIdx.x] = s[1 - threadIdx.x];
}

// Every block writes the same element: a race between blocks on a GPU.
__global__ void last_block_kernel(int* out) {
  if (threadIdx.x == 0) out[0] = int(blockIdx.x);
}

// Between barriers threads run one after another, in index order (or in reverse with
// CUDA_EMU_ORDER=reverse, blocks too): the later thread sees the earlier one's write, so running
// the tests in both orders exposes a missing __syncthreads or a race between blocks.
TEST(CudaEmu, ThreadsAndBlocksRunInOrder) {
  int* out = device_array<int>(2);
  racy_kernel<<<1, 2>>>(out);
  const std::vector<int> got = to_host(out, 2);
  const char* order = std::getenv("CUDA_EMU_ORDER");
  const bool reverse = order && std::string(order) == "reverse";
  if (reverse) EXPECT_EQ(got[0], 2) << "thread 0 ran after thread 1";
  else EXPECT_EQ(got[1], 1) << "thread 1 ran after thread 0";
  last_block_kernel<<<3, 32>>>(out);
  EXPECT_EQ(to_host(out, 1)[0], reverse ? 0 : 2) << "the block that ran last";
  cudaFree(out);
}

__global__ void read_kernel(const float* x, int i, float* out) { out[0] = x[i]; }

// In an AddressSanitizer build (-fsanitize=address), a kernel reading one float past a tensor
// from the caching allocator, or a released tensor, is reported although the 512-byte block
// holds the address.
TEST(CudaEmu, AsanCatchesReadsPastATensorAndAfterRelease) {
#if !defined(CUDA_EMU_ASAN)
  GTEST_SKIP() << "needs an AddressSanitizer build (-fsanitize=address)";
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  float* x = static_cast<float*>(convnet::cuda::allocate(5 * sizeof(float), 0));
  float* out = static_cast<float*>(convnet::cuda::allocate(sizeof(float), 0));
  read_kernel<<<1, 1>>>(x, 4, out);  // the last element: fine
  EXPECT_DEATH(read_kernel<<<1, 1>>>(x, 5, out), "use-after-poison");
  convnet::cuda::release(x, 0);
  EXPECT_DEATH(read_kernel<<<1, 1>>>(x, 0, out), "use-after-poison");
  convnet::cuda::release(out, 0);
#endif
}

}  // namespace

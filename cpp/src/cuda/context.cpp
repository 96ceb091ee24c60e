// Per-device state: the current device of each host thread, and one compute stream per device.
// All kernels of a device run in order on its stream, so no event is needed inside a device;
// copies between devices synchronise explicitly (memory.cpp).
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/runtime.h"

namespace convnet::cuda {

namespace {
thread_local int current_device = -1;

std::vector<cudaStream_t>& streams() {
  static std::vector<cudaStream_t> s;
  return s;
}
std::mutex& streams_mutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

void check_device(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw RuntimeError(detail::concat("cuda:", device, " does not exist: ", n,
                                      " CUDA device(s) visible"));
}

void set_device(int device) {
  if (device == current_device) return;
  CONVNET_CUDA_CHECK(cudaSetDevice(device));
  current_device = device;
}

cudaStream_t stream(int device) {
  if (device < 0) throw RuntimeError(detail::concat("cuda:", device, " does not exist"));
  std::lock_guard<std::mutex> lock(streams_mutex());
  auto& s = streams();
  if (device >= static_cast<int>(s.size())) s.resize(device + 1, nullptr);
  if (!s[device]) {
    int previous = 0;
    CONVNET_CUDA_CHECK(cudaGetDevice(&previous));
    CONVNET_CUDA_CHECK(cudaSetDevice(device));
    const cudaError_t err = cudaStreamCreateWithFlags(&s[device], cudaStreamNonBlocking);
    cudaSetDevice(previous);  // restored even when the creation failed: set_device caches it
    check_cuda(err, "cudaStreamCreateWithFlags", __FILE__, __LINE__);
  }
  return s[device];
}

cudaStream_t current_stream() {
  int device = current_device;
  if (device < 0) CONVNET_CUDA_CHECK(cudaGetDevice(&device));
  return stream(device);
}

void synchronize(int device) { CONVNET_CUDA_CHECK(cudaStreamSynchronize(stream(device))); }

StreamEvent::StreamEvent(int device) : device_(device) {
  set_device(device);
  cudaEvent_t e = nullptr;
  CONVNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  event_ = e;
}

StreamEvent::~StreamEvent() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void StreamEvent::record() {
  set_device(device_);
  CONVNET_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), stream(device_)));
  recorded_ = true;
}

void StreamEvent::make_wait(int device) const {
  if (!recorded_) return;
  set_device(device);
  CONVNET_CUDA_CHECK(cudaStreamWaitEvent(stream(device), static_cast<cudaEvent_t>(event_), 0));
}

}  // namespace convnet::cuda

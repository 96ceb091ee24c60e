// Per-thread state (the current device and lane of each host thread), the streams (one per
// lane of each device; a thread's kernels, copies and GEMMs run in order on its lane, work on
// two lanes is ordered by StreamEvents or a synchronisation) and peer access between GPUs.
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/runtime.h"

namespace convnet::cuda {

namespace {
thread_local int current_device = -1;
thread_local int current_lane = 0;

std::vector<std::vector<cudaStream_t>>& streams() {  // [device][lane]
  static std::vector<std::vector<cudaStream_t>> s;
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

void set_lane(int lane) {
  if (lane < 0) throw RuntimeError(detail::concat("lane ", lane, " does not exist"));
  current_lane = lane;
}

int lane() { return current_lane; }

cudaStream_t stream(int device, int lane) {
  if (device < 0) throw RuntimeError(detail::concat("cuda:", device, " does not exist"));
  std::lock_guard<std::mutex> lock(streams_mutex());
  auto& s = streams();
  if (device >= static_cast<int>(s.size())) s.resize(device + 1);
  auto& lanes = s[size_t(device)];
  if (lane >= static_cast<int>(lanes.size())) lanes.resize(size_t(lane) + 1, nullptr);
  cudaStream_t& made = lanes[size_t(lane)];
  if (!made) {
    int previous = 0;
    CONVNET_CUDA_CHECK(cudaGetDevice(&previous));
    CONVNET_CUDA_CHECK(cudaSetDevice(device));
    const cudaError_t err = cudaStreamCreateWithFlags(&made, cudaStreamNonBlocking);
    cudaSetDevice(previous);  // restored even when the creation failed: set_device caches it
    check_cuda(err, "cudaStreamCreateWithFlags", __FILE__, __LINE__);
  }
  return made;
}

cudaStream_t stream(int device) { return stream(device, current_lane); }

cudaStream_t current_stream() {
  int device = current_device;
  if (device < 0) CONVNET_CUDA_CHECK(cudaGetDevice(&device));
  return stream(device);
}

void synchronize(int device) {
  std::vector<cudaStream_t> lanes;
  {
    std::lock_guard<std::mutex> lock(streams_mutex());
    auto& s = streams();
    if (device >= 0 && device < static_cast<int>(s.size())) lanes = s[size_t(device)];
  }
  if (lanes.empty()) lanes.push_back(stream(device, 0));
  for (cudaStream_t made : lanes)
    if (made) CONVNET_CUDA_CHECK(cudaStreamSynchronize(made));
}

bool enable_peer_access(int device, int peer) {
  int can = 0;
  CONVNET_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, device, peer));
  if (!can) return false;
  set_device(device);
  const cudaError_t err = cudaDeviceEnablePeerAccess(peer, 0);
  if (err == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();  // clears the error it sets
  else check_cuda(err, "cudaDeviceEnablePeerAccess", __FILE__, __LINE__);
  return true;
}

void synchronize_lane(int device) { CONVNET_CUDA_CHECK(cudaStreamSynchronize(stream(device))); }

StreamEvent::StreamEvent(int device, int lane) : device_(device), lane_(lane) {
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
  CONVNET_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), stream(device_, lane_)));
  recorded_ = true;
}

void StreamEvent::make_wait(int device, int lane) const {
  if (!recorded_) return;
  set_device(device);
  CONVNET_CUDA_CHECK(cudaStreamWaitEvent(stream(device, lane), static_cast<cudaEvent_t>(event_), 0));
}

}  // namespace convnet::cuda

// cuda_emu: devices, memory, streams, graph capture and graphs (see include/cuda_runtime.h).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace cuda_emu {
void run_kernel(Kernel& kernel, int device);  // kernel.cpp
}

// What the stream-order checker knows: per agent (a stream; agent 0 is the host and its legacy
// default streams), how much of its work is known to have finished.
using VectorClock = std::map<int, uint64_t>;

struct CUstream_st {
  int device = 0;
  cuda_emu_graph* capture = nullptr;  // the graph being captured, if any
  bool invalidated = false;           // a forbidden call during the capture
  int agent = 0;                      // 0: a legacy default stream, the host's own order
  VectorClock clock;                  // the work this stream's next item comes after
};

struct cuda_emu_node {
  std::shared_ptr<cuda_emu::Kernel> kernel;  // a kernel node, or
  std::function<void()> work;                // a copy or a GEMM
  std::string what;
  std::vector<cuda_emu::MemoryUse> uses;     // of `work`
};

struct cuda_emu_graph {
  int device = 0;
  std::vector<std::unique_ptr<cuda_emu_node>> nodes;
  cudaGraphNode_t last = nullptr;  // what cudaStreamGetCaptureInfo reports as the dependency
};

struct cuda_emu_event {
  std::chrono::steady_clock::time_point when;
  bool recorded = false;
  VectorClock clock;  // the work recorded before it
};

struct cuda_emu_graph_exec {
  int device = 0;
  std::vector<cuda_emu_node> nodes;        // copies: patching them leaves the graph as it was
  std::map<cudaGraphNode_t, size_t> index;  // graph node -> its copy
};

namespace cuda_emu {
namespace {

thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

cudaError_t fail(cudaError_t err) {
  last_error = err;
  return err;
}

int emulated_devices() {
  const char* env = std::getenv("CUDA_EMU_DEVICES");
  return env ? std::atoi(env) : 2;
}

struct Allocation {
  size_t bytes = 0;
  int device = -1;  // -1: page-locked host memory
};

std::mutex memory_mutex;
std::map<uintptr_t, Allocation>& allocations() {
  static std::map<uintptr_t, Allocation> a;
  return a;
}

// The allocation that holds [ptr, ptr + bytes), if one does.
const Allocation* find(const void* ptr, size_t bytes) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
  auto& a = allocations();
  auto it = a.upper_bound(p);
  if (it == a.begin()) return nullptr;
  --it;
  if (p + bytes > it->first + it->second.bytes || (bytes == 0 && p >= it->first + it->second.bytes))
    return nullptr;
  return &it->second;
}

int device_of(const void* ptr, size_t bytes) {  // -2: not in one device allocation
  std::lock_guard<std::mutex> lock(memory_mutex);
  const Allocation* a = find(ptr, bytes);
  return a && a->device >= 0 ? a->device : -2;
}

void* allocate(size_t bytes, int device, unsigned char fill) {
  const size_t rounded = ((bytes ? bytes : 1) + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (!p) return nullptr;
  std::memset(p, fill, rounded);
  std::lock_guard<std::mutex> lock(memory_mutex);
  allocations()[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, device};
  return p;
}

// ---- the stream-order checker ----
// On a GPU, work on two streams runs in any order unless an event (cudaEventRecord +
// cudaStreamWaitEvent) or a host synchronisation orders it. The emulator runs each item the
// moment it is submitted, so a missing wait would give the right answer here and a race on a
// GPU. So every item gets a vector clock (what it is known to come after), and each use of an
// allocation is checked against the last write to it (and a write against the reads since) by
// another agent: one not ordered before it is reported as the race it would be. A kernel writes
// through the pointers its declaration does not make const (translate.py reads them), copies,
// GEMMs and NCCL say which operand they write. One mutex: the device threads submit side by side.
std::mutex order_mutex;
std::atomic<uint64_t> host_wait_count{0};
thread_local uint64_t host_waits_here = 0;
void count_host_wait() {
  ++host_wait_count;
  ++host_waits_here;
}
VectorClock host_clock;  // what the host knows has finished (its own work: agent 0)
int agents = 1;
std::vector<CUstream_st*> streams_made;
struct Use {
  int agent = -1;  // -1: none
  uint64_t seq = 0;
  std::string what;
};
struct Uses {
  Use write;
  std::map<int, Use> reads;
};
std::map<uintptr_t, Uses>& uses() {
  static std::map<uintptr_t, Uses> u;
  return u;
}

void merge(VectorClock& into, const VectorClock& from) {
  for (const auto& [agent, seq] : from) into[agent] = std::max(into[agent], seq);
}
uint64_t known(const VectorClock& c, int agent) {
  auto it = c.find(agent);
  return it == c.end() ? 0 : it->second;
}
std::string agent_name(int agent) {
  return agent == 0 ? "the host's default stream" : "stream #" + std::to_string(agent);
}

void forget_uses(uintptr_t base) {
  std::lock_guard<std::mutex> lock(order_mutex);
  uses().erase(base);
}

// A work item about to run on stream s: its agent and clock (caller holds order_mutex).
std::pair<int, VectorClock> begin_item(CUstream_st* s) {
  if (s->agent == 0) {
    ++host_clock[0];
    return {0, host_clock};
  }
  merge(s->clock, host_clock);  // the host submits it after everything it knows has finished
  ++s->clock[s->agent];
  return {s->agent, s->clock};
}

void check_uses(CUstream_st* s, const std::string& what, const std::vector<MemoryUse>& list) {
  if (list.empty()) return;
  std::lock_guard<std::mutex> lock(order_mutex);
  // Not a structured binding: clang 14 (the sanitizer builds) cannot capture one in a lambda.
  const auto item = begin_item(s);
  const auto& agent = item.first;
  const auto& clock = item.second;
  for (const MemoryUse& m : list) {
    uintptr_t base = 0;
    {
      std::lock_guard<std::mutex> memory(memory_mutex);
      const uintptr_t p = reinterpret_cast<uintptr_t>(m.ptr);
      auto& a = allocations();
      auto it = a.upper_bound(p);
      if (it == a.begin()) continue;
      --it;
      if (p >= it->first + std::max<size_t>(it->second.bytes, 1) || it->second.device < 0) continue;
      base = it->first;
    }
    Uses& u = uses()[base];
    auto unordered = [&](const Use& x) {
      return x.agent >= 0 && x.agent != agent && x.seq > known(clock, x.agent);
    };
    auto race = [&](const Use& x, const char* did) {
      throw std::logic_error("cuda_emu: " + what + " on " + agent_name(agent) + " uses memory that " + x.what +
                             " on " + agent_name(x.agent) + " " + did +
                             " with no event wait or synchronisation between them: a race on a GPU");
    };
    if (unordered(u.write)) race(u.write, "writes");
    if (m.write) {
      for (const auto& [other, r] : u.reads)
        if (unordered(r)) race(r, "reads");
      u.write = Use{agent, known(clock, agent), what};
      u.reads.clear();
    } else {
      u.reads[agent] = Use{agent, known(clock, agent), what};
    }
  }
}

cudaError_t release(void* ptr, bool pinned) {
  if (!ptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(memory_mutex);
  auto& a = allocations();
  auto it = a.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == a.end() || (it->second.device < 0) != pinned) return fail(cudaErrorInvalidValue);
  forget_uses(it->first);
  a.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

CUstream_st* stream_or_default(cudaStream_t s) {
  if (s) return s;
  thread_local std::vector<std::unique_ptr<CUstream_st>> defaults;  // legacy stream per device
  if (current_device >= int(defaults.size())) defaults.resize(size_t(current_device) + 1);
  auto& d = defaults[size_t(current_device)];
  if (!d) {
    d = std::make_unique<CUstream_st>();
    d->device = current_device;
  }
  return d.get();
}

void add_node(CUstream_st* s, std::unique_ptr<cuda_emu_node> node) {
  s->capture->last = node.get();
  s->capture->nodes.push_back(std::move(node));
}

std::vector<MemoryUse> kernel_uses(const Kernel& k) {
  std::vector<MemoryUse> out;
  k.pointer_args([&](const void* p, int index) { out.push_back(MemoryUse{p, k.may_write(index)}); });
  return out;
}

void run_node(cuda_emu_node& node, CUstream_st* s) {
  if (node.kernel) {
    check_uses(s, std::string("kernel launched at ") + node.kernel->where, kernel_uses(*node.kernel));
    run_kernel(*node.kernel, s->device);
  } else {
    check_uses(s, node.what, node.uses);
    node.work();
  }
}

[[noreturn]] void misuse(const std::string& what) { throw std::logic_error("cuda_emu: " + what); }

}  // namespace

bool on_device(const void* ptr, size_t bytes, int device) { return device_of(ptr, bytes) == device; }

int stream_device(cudaStream_t stream) { return stream_or_default(stream)->device; }

uint64_t host_waits() { return host_wait_count.load(); }
uint64_t host_waits_on_this_thread() { return host_waits_here; }

// Every pointer argument must point into memory of the device the kernel runs on.
void check_kernel_pointers(const Kernel& k, int device) {
  k.pointer_args([&](const void* p, int index) {
    int owner;
    bool pinned = false;
    {
      std::lock_guard<std::mutex> lock(memory_mutex);
      const Allocation* a = find(p, 1);
      owner = a ? a->device : -2;
      pinned = a && a->device < 0;
    }
    if (owner == device) return;
    misuse(std::string("kernel launched at ") + k.where + ": argument " + std::to_string(index) +
           " points to " +
           (pinned ? "page-locked host memory"
                   : owner >= 0 ? "memory of cuda:" + std::to_string(owner)
                                : std::string("memory no cudaMalloc returned")) +
           ", not to memory of cuda:" + std::to_string(device));
  });
}

void submit(std::shared_ptr<Kernel> kernel) {
  CUstream_st* s = stream_or_default(kernel->config.stream);
  const Config& c = kernel->config;
  const unsigned long long threads = 1ull * c.block.x * c.block.y * c.block.z;
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || threads == 0 || threads > 1024 ||
      c.block.z > 64 || c.grid.y > 65535 || c.grid.z > 65535 || c.grid.x > 2147483647u) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (s->capture) {
    auto node = std::make_unique<cuda_emu_node>();
    node->kernel = std::move(kernel);
    node->what = "kernel";
    add_node(s, std::move(node));
    return;
  }
  check_kernel_pointers(*kernel, s->device);  // before the order: a foreign pointer says more
  check_uses(s, std::string("kernel launched at ") + kernel->where, kernel_uses(*kernel));
  run_kernel(*kernel, s->device);
}

void submit_host_work(cudaStream_t stream, const char* what, std::function<void()> work,
                      std::vector<MemoryUse> uses) {
  CUstream_st* s = stream_or_default(stream);
  if (s->capture) {
    auto node = std::make_unique<cuda_emu_node>();
    node->work = std::move(work);
    node->what = what;
    node->uses = std::move(uses);
    add_node(s, std::move(node));
    return;
  }
  check_uses(s, what, uses);
  work();
}

}  // namespace cuda_emu

using namespace cuda_emu;

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorPeerAccessUnsupported: return "cudaErrorPeerAccessUnsupported";
    case cudaErrorPeerAccessAlreadyEnabled: return "cudaErrorPeerAccessAlreadyEnabled";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaSuccess ? "no error" : "reported by the CUDA emulator (cuda_emu)";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = emulated_devices();
  return *count > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = allocate(bytes, current_device, 0xFF);  // NaN floats until written
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* ptr) { return release(ptr, false); }

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned) {
  *ptr = allocate(bytes, -1, 0xFF);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void* ptr) { return release(ptr, true); }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  std::lock_guard<std::mutex> lock(memory_mutex);
  const Allocation* a = find(ptr, 1);
  *attributes = cudaPointerAttributes{cudaMemoryTypeUnregistered, -2, nullptr, nullptr};
  if (a && a->device < 0) *attributes = {cudaMemoryTypeHost, current_device, const_cast<void*>(ptr), const_cast<void*>(ptr)};
  if (a && a->device >= 0) *attributes = {cudaMemoryTypeDevice, a->device, const_cast<void*>(ptr), nullptr};
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const int d = device_of(dst, bytes), s = device_of(src, bytes);
  // A device pointer whose range leaves its allocation is not in any one: caught as "host".
  const bool dst_in_some = d >= 0, src_in_some = s >= 0;
  auto plain_host = [](const void* p) { return device_of(p, 1) < 0; };  // not device memory
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_in_some && plain_host(src); break;
    case cudaMemcpyDeviceToHost: ok = src_in_some && plain_host(dst); break;
    case cudaMemcpyDeviceToDevice: ok = dst_in_some && src_in_some; break;
    case cudaMemcpyHostToHost: ok = plain_host(dst) && plain_host(src); break;
    case cudaMemcpyDefault:
      // Whatever is not host memory must lie wholly inside one device allocation.
      ok = (dst_in_some || plain_host(dst)) && (src_in_some || plain_host(src));
      break;
  }
  if (!ok) return fail(cudaErrorInvalidValue);
  submit_host_work(stream, "memcpy", [=] { std::memmove(dst, src, bytes); }, {{src, false}, {dst, true}});
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (width > dst_pitch || width > src_pitch) return fail(cudaErrorInvalidValue);
  // Each side's whole span (first row's start to last row's end) is checked as one copy would be.
  const size_t dst_span = dst_pitch * (height - 1) + width, src_span = src_pitch * (height - 1) + width;
  const int d = device_of(dst, dst_span), s = device_of(src, src_span);
  auto plain_host = [](const void* p) { return device_of(p, 1) < 0; };
  if (kind != cudaMemcpyDefault) return fail(cudaErrorInvalidValue);  // all convnet uses
  if (!((d >= 0 || plain_host(dst)) && (s >= 0 || plain_host(src)))) return fail(cudaErrorInvalidValue);
  submit_host_work(stream, "2-D memcpy", [=] {
    for (size_t r = 0; r < height; ++r)
      std::memmove(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
  }, {{src, false}, {dst, true}});
  return cudaSuccess;
}

cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!on_device(dst, bytes, dst_device) || !on_device(src, bytes, src_device))
    return fail(cudaErrorInvalidValue);
  submit_host_work(stream, "peer memcpy", [=] { std::memmove(dst, src, bytes); }, {{src, false}, {dst, true}});
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  std::lock_guard<std::mutex> lock(order_mutex);
  *stream = new CUstream_st{current_device, nullptr, false, agents++, {}};
  streams_made.push_back(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  CUstream_st* s = stream_or_default(stream);
  if (s->capture) {  // illegal while capturing: the capture is invalidated, as on a GPU
    s->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  count_host_wait();
  std::lock_guard<std::mutex> lock(order_mutex);
  merge(host_clock, s->clock);  // the host now knows the stream's work has finished
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  CUstream_st* s = stream_or_default(stream);
  std::lock_guard<std::mutex> lock(order_mutex);
  merge(s->agent == 0 ? host_clock : s->clock, event->clock);
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  count_host_wait();
  std::lock_guard<std::mutex> lock(order_mutex);
  merge(host_clock, event->clock);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  CUstream_st* s = stream_or_default(stream);
  if (!stream || s->capture) return fail(cudaErrorInvalidValue);
  s->capture = new cuda_emu_graph;
  s->capture->device = s->device;
  s->invalidated = false;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  CUstream_st* s = stream_or_default(stream);
  if (!s->capture) return fail(cudaErrorInvalidValue);
  cuda_emu_graph* g = s->capture;
  s->capture = nullptr;
  if (s->invalidated) {
    delete g;
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, cudaStreamCaptureStatus* status,
                                     unsigned long long* id, cudaGraph_t* graph,
                                     const cudaGraphNode_t** dependencies, size_t* count) {
  CUstream_st* s = stream_or_default(stream);
  *status = !s->capture ? cudaStreamCaptureStatusNone
            : s->invalidated ? cudaStreamCaptureStatusInvalidated
                             : cudaStreamCaptureStatusActive;
  if (id) *id = reinterpret_cast<uintptr_t>(s->capture);
  if (graph) *graph = s->capture;
  if (dependencies) *dependencies = s->capture && s->capture->last ? &s->capture->last : nullptr;
  if (count) *count = s->capture && s->capture->last ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  auto* e = new cuda_emu_graph_exec;
  e->device = graph->device;
  for (auto& n : graph->nodes) {
    e->index[n.get()] = e->nodes.size();
    cuda_emu_node copy;
    copy.kernel = n->kernel ? n->kernel->clone() : nullptr;
    copy.work = n->work;
    copy.what = n->what;
    e->nodes.push_back(std::move(copy));
  }
  *exec = e;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  CUstream_st* s = stream_or_default(stream);
  if (!exec) return fail(cudaErrorInvalidValue);
  if (s->capture) return fail(cudaErrorStreamCaptureUnsupported);
  if (s->device != exec->device) return fail(cudaErrorInvalidValue);
  for (auto& n : exec->nodes) run_node(n, s);
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (!graph) return fail(cudaErrorInvalidValue);
  if (nodes)
    for (size_t i = 0; i < *count && i < graph->nodes.size(); ++i) nodes[i] = graph->nodes[i].get();
  *count = graph->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphExecKernelNodeSetParams(cudaGraphExec_t exec, cudaGraphNode_t node,
                                             const cudaKernelNodeParams* params) {
  auto it = exec->index.find(node);
  if (it == exec->index.end() || !exec->nodes[it->second].kernel) return fail(cudaErrorInvalidValue);
  Kernel& k = *exec->nodes[it->second].kernel;
  k.config.grid = params->gridDim;
  k.config.block = params->blockDim;
  k.config.shared_bytes = params->sharedMemBytes;
  k.set_args(params->kernelParams);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "cuda_emu (emulated on the host)");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->totalGlobalMem = size_t(80) << 30;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  switch (attribute) {
    case cudaDevAttrClockRate: *value = 1980000; return cudaSuccess;         // kHz
    case cudaDevAttrMemoryClockRate: *value = 2619000; return cudaSuccess;   // kHz
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; return cudaSuccess; // bits
  }
  return fail(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceCanAccessPeer(int* can_access, int device, int peer) {
  const int n = emulated_devices();
  if (device < 0 || device >= n || peer < 0 || peer >= n) return fail(cudaErrorInvalidDevice);
  const char* off = std::getenv("CUDA_EMU_NO_PEER");
  *can_access = device != peer && !(off && std::string(off) == "1");
  return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned flags) {
  static std::mutex mu;
  static std::set<std::pair<int, int>> enabled;
  int can = 0;
  if (flags != 0) return fail(cudaErrorInvalidValue);
  if (cudaDeviceCanAccessPeer(&can, current_device, peer) != cudaSuccess) return last_error;
  if (!can) return fail(cudaErrorPeerAccessUnsupported);
  std::lock_guard<std::mutex> lock(mu);
  if (!enabled.insert({current_device, peer}).second) return fail(cudaErrorPeerAccessAlreadyEnabled);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  count_host_wait();
  std::lock_guard<std::mutex> lock(order_mutex);
  for (CUstream_st* s : streams_made)
    if (s->device == current_device) merge(host_clock, s->clock);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new cuda_emu_event;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) { return cudaEventCreate(event); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  CUstream_st* s = stream_or_default(stream);
  if (s->capture) return fail(cudaErrorStreamCaptureUnsupported);
  event->when = std::chrono::steady_clock::now();
  event->recorded = true;
  std::lock_guard<std::mutex> lock(order_mutex);
  event->clock = s->agent == 0 ? host_clock : s->clock;
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes && device_of(ptr, bytes) < 0) return fail(cudaErrorInvalidValue);
  submit_host_work(nullptr, "memset", [=] { std::memset(ptr, value, bytes); }, {{ptr, true}});
  return cudaSuccess;
}

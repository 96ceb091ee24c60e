// The caching device allocator, pinned host buffers, and copies between devices.
//
// Freed device blocks are kept in a per-device pool and handed out again for requests of the same
// rounded size (or up to twice it), so a steady-state training step never calls cudaMalloc. A
// freed block goes to the releasing thread's lane (a stream, context.cpp) and only that lane
// takes it again, so it can be reused at once: the stream orders the old user's kernels before
// the new user's. (Handed to another lane, it could be written while the old user still reads.)
// A captured CUDA graph replays its kernels later, on addresses fixed at capture: the blocks it may touch are set
// aside for it (GraphBlocks) until it is destroyed.
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda/check.h"
#include "cuda/runtime.h"

// Under cuda_emu (tests/cuda_emu) device memory is host memory. In an AddressSanitizer build of
// it, the unused tail of each block and every released block are poisoned, so a kernel that runs
// past its tensor, or uses one after release, is reported where it happens.
#if defined(CONVNET_CUDA_EMULATION) && defined(CUDA_EMU_ASAN)  // (the emulator's cuda_runtime.h)
#include <sanitizer/asan_interface.h>
#define CONVNET_POISON(ptr, bytes) ASAN_POISON_MEMORY_REGION(ptr, bytes)
#define CONVNET_UNPOISON(ptr, bytes) ASAN_UNPOISON_MEMORY_REGION(ptr, bytes)
#else
#define CONVNET_POISON(ptr, bytes) ((void)(ptr), (void)(bytes))
#define CONVNET_UNPOISON(ptr, bytes) ((void)(ptr), (void)(bytes))
#endif

namespace convnet::cuda {

namespace {

size_t round_size(size_t bytes) {
  const size_t unit = bytes < (1u << 20) ? 512 : (2u << 20);  // 512 B small, 2 MiB large
  return (bytes + unit - 1) / unit * unit;
}

// Blocks a CUDA graph may touch on replay: those allocated or freed while it was captured.
// They are never handed to anyone but that graph's own capture until the graph is gone.
struct GraphBlocks {
  std::multimap<size_t, void*> free;   // freed, kept for the graph
  std::unordered_set<void*> allocated;  // allocated during its capture (live or freed)
  int lane = 0;                         // the lane it was captured on, where its replays run
};

using FreeBlocks = std::multimap<size_t, void*>;  // size -> block

struct Pool {
  std::vector<FreeBlocks> free;             // per lane
  FreeBlocks& free_on(int lane) {
    if (lane >= static_cast<int>(free.size())) free.resize(size_t(lane) + 1);
    return free[size_t(lane)];
  }
  std::unordered_map<void*, size_t> sizes;  // every live or cached block
  MemoryStats stats;
  int capturing = 0;  // the graph pool being captured on this device; 0: none
  std::map<int, GraphBlocks> graphs;
};

int next_graph_pool = 1;

// A block at least `size` and at most twice it from `free`, or nullptr.
void* take(std::multimap<size_t, void*>& free, size_t size, size_t& got) {
  auto it = free.lower_bound(size);
  if (it == free.end() || it->first > 2 * size) return nullptr;
  got = it->first;
  void* ptr = it->second;
  free.erase(it);
  return ptr;
}

std::mutex mu;
std::vector<Pool>& pools() {
  static std::vector<Pool> p;
  return p;
}
Pool& pool(int device) {
  auto& p = pools();
  if (device >= static_cast<int>(p.size())) p.resize(device + 1);
  return p[device];
}

// Frees every cached block of a device (the caller has made it current). A failing cudaFree
// is reported here, not left behind as the sticky last error for an unrelated launch to report.
void free_cached(FreeBlocks& free, Pool& p, int device) {
  while (!free.empty()) {
    auto [size, ptr] = *free.begin();
    CONVNET_UNPOISON(ptr, size);
    const cudaError_t err = cudaFree(ptr);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw RuntimeError(detail::concat("cudaFree of a cached block on cuda:", device,
                                        " failed: ", cudaGetErrorString(err)));
    }
    free.erase(free.begin());
    p.sizes.erase(ptr);
    p.stats.cached_bytes -= size;
  }
}

void free_cached(Pool& p, int device) {
  for (FreeBlocks& free : p.free) free_cached(free, p, device);
}

}  // namespace

void* allocate(size_t bytes, int device) {
  check_device(device);
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu);
  Pool& p = pool(device);
  size_t got = size;
  void* ptr = p.capturing ? take(p.graphs[p.capturing].free, size, got) : nullptr;
  if (!ptr) ptr = take(p.free_on(lane()), size, got);
  if (ptr) {
    p.stats.cached_bytes -= got;
  } else {
    set_device(device);
    cudaError_t err = cudaMalloc(&ptr, size);
    // Give the cache back and try once more; not while a graph is captured, where waiting for
    // the stream is illegal (the out-of-memory error below is the truer report then).
    if (err != cudaSuccess && !p.capturing) {
      cudaGetLastError();
      synchronize(device);
      free_cached(p, device);
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw RuntimeError(detail::concat("out of memory on cuda:", device, " allocating ", size,
                                        " bytes (", p.stats.current_bytes, " bytes in use): ",
                                        cudaGetErrorString(err)));
    }
    ++p.stats.cuda_malloc_calls;
    p.sizes[ptr] = size;
  }
  if (p.capturing) p.graphs[p.capturing].allocated.insert(ptr);
  CONVNET_UNPOISON(ptr, bytes);
  CONVNET_POISON(static_cast<char*>(ptr) + bytes, got - bytes);
  p.stats.current_bytes += got;
  p.stats.peak_bytes = std::max(p.stats.peak_bytes, p.stats.current_bytes);
  return ptr;
}

void release(void* ptr, int device) noexcept {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu);
  Pool& p = pool(device);
  auto it = p.sizes.find(ptr);
  if (it == p.sizes.end()) return;  // not ours
  // A block freed during a capture, or allocated in one, stays with that graph.
  GraphBlocks* keeper = p.capturing ? &p.graphs[p.capturing] : nullptr;
  for (auto g = p.graphs.begin(); !keeper && g != p.graphs.end(); ++g)
    if (g->second.allocated.count(ptr)) keeper = &g->second;
  (keeper ? keeper->free : p.free_on(lane())).emplace(it->second, ptr);
  // A graph's blocks are written again by its replays: only the others are out of bounds now.
  if (keeper) CONVNET_UNPOISON(ptr, it->second);
  else CONVNET_POISON(ptr, it->second);
  p.stats.current_bytes -= it->second;
  p.stats.cached_bytes += it->second;
}

Scratch::Scratch(size_t bytes) {
  CONVNET_CUDA_CHECK(cudaGetDevice(&device));
  ptr = allocate(bytes, device);
}

int begin_graph_pool(int device) {
  std::lock_guard<std::mutex> lock(mu);
  Pool& p = pool(device);
  if (p.capturing)
    throw RuntimeError(detail::concat("cuda:", device, " is already capturing a CUDA graph"));
  p.capturing = next_graph_pool++;
  p.graphs[p.capturing].lane = lane();
  return p.capturing;
}

void end_graph_pool(int device) noexcept {
  std::lock_guard<std::mutex> lock(mu);
  pool(device).capturing = 0;
}

void free_graph_pool(int device, int id) noexcept {
  std::lock_guard<std::mutex> lock(mu);
  Pool& p = pool(device);
  auto g = p.graphs.find(id);
  if (g == p.graphs.end()) return;
  p.free_on(g->second.lane).merge(g->second.free);  // the graph is gone: ordinary cache again
  p.graphs.erase(g);
  if (p.capturing == id) p.capturing = 0;
}

MemoryStats memory_stats(int device) {
  check_device(device);
  std::lock_guard<std::mutex> lock(mu);
  return pool(device).stats;
}

void reset_peak(int device) {
  check_device(device);
  std::lock_guard<std::mutex> lock(mu);
  Pool& p = pool(device);
  p.stats.peak_bytes = p.stats.current_bytes;
}

void empty_cache(int device) {
  check_device(device);
  synchronize(device);
  std::lock_guard<std::mutex> lock(mu);
  set_device(device);
  free_cached(pool(device), device);
}

void* allocate_pinned(size_t bytes) {
  void* p = nullptr;
  CONVNET_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
  return p;
}

void release_pinned(void* ptr) noexcept {
  // noexcept (destructors call it): a failure is cleared, not left for the next launch check.
  if (ptr && cudaFreeHost(ptr) != cudaSuccess) cudaGetLastError();
}

bool is_page_locked(const void* host_ptr) {
  cudaPointerAttributes a{};
  CONVNET_CUDA_CHECK(cudaPointerGetAttributes(&a, host_ptr));
  return a.type == cudaMemoryTypeHost;
}

void copy(void* dst, const Device& dst_device, const void* src, const Device& src_device,
          size_t bytes, bool queued) {
  if (bytes == 0) return;
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    if (dst_device.index == src_device.index) {  // ordered on this lane
      set_device(dst_device.index);
      CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                         stream(dst_device.index)));
      return;
    }
    // Across GPUs: the source's pending kernels first, then the copy; synchronous so that
    // neither block can be reused under it (unless the caller's events order it).
    if (!queued) synchronize(src_device.index);
    set_device(dst_device.index);
    CONVNET_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes,
                                           stream(dst_device.index)));
    if (!queued) synchronize_lane(dst_device.index);
    return;
  }
  // Host <-> device: queued on this lane, finished on return; from a device, after the work of
  // all its lanes (whichever wrote the source).
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  if (src_device.is_cuda()) synchronize(device);
  set_device(device);
  CONVNET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream(device)));
  synchronize_lane(device);
}

void copy_rows(void* dst, const Device& dst_device, size_t dst_pitch, const void* src,
               const Device& src_device, size_t src_pitch, size_t width, size_t rows, bool queued) {
  // Ordered as copy() orders a copy between the same two devices: the source's pending kernels
  // first, then the copy on the destination's stream (or the one device's), done on return
  // unless it stays on one GPU or is queued between two.
  const bool both = dst_device.is_cuda() && src_device.is_cuda();
  const bool one_gpu = both && dst_device.index == src_device.index;
  const bool wait = !one_gpu && !(queued && both);
  if (src_device.is_cuda() && wait) synchronize(src_device.index);
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  set_device(device);
  CONVNET_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDefault,
                                       stream(device)));
  if (wait) synchronize_lane(device);
}

}  // namespace convnet::cuda

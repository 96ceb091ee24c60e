// Gradient sums on GPUs across processes: one NCCL communicator per GPU a rank drives, spanning
// the ranks, each bucket's sum queued on the GPU's compute stream behind the backward kernels
// that wrote it. The communicator's unique id comes from rank 0; World broadcasts it over MPI.
// NCCL is loaded when first used, not linked: a process that imports convnet and then PyTorch
// must find PyTorch's own NCCL (newer; libtorch_cuda needs symbols an older one lacks) when
// PyTorch loads, and a run that never sums on GPUs never loads it. Under cuda_emu the
// emulator's stand-in is called directly.
#ifdef CONVNET_WITH_NCCL
#include <nccl.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#ifndef CONVNET_CUDA_EMULATION
#include <dlfcn.h>
#endif

#include "cuda/check.h"
#include "cuda/runtime.h"

namespace convnet::cuda {

namespace {

// The NCCL calls convnet makes.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id;
  decltype(&ncclCommInitRank) comm_init_rank;
  decltype(&ncclAllReduce) all_reduce;
  decltype(&ncclGetErrorString) error_string;
};

#ifdef CONVNET_CUDA_EMULATION
NcclApi load_nccl() { return {&ncclGetUniqueId, &ncclCommInitRank, &ncclAllReduce, &ncclGetErrorString}; }
#else
NcclApi load_nccl() {
  void* lib = nullptr;
  std::string why;
#ifndef CONVNET_NCCL_PATH
#define CONVNET_NCCL_PATH "libnccl.so"
#endif
  // One already loaded (PyTorch's) or on the library path first, then the one it was built with.
  for (const char* name : {"libnccl.so.2", CONVNET_NCCL_PATH}) {
    lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (lib) break;
    why += std::string(why.empty() ? "" : "; ") + dlerror();
  }
  if (!lib)
    throw RuntimeError("NCCL could not be loaded (" + why + "): summing gradients on GPUs across "
                       "processes needs libnccl.so.2 on the library path (LD_LIBRARY_PATH)");
  auto symbol = [&](const char* name) {
    void* f = dlsym(lib, name);
    if (!f) throw RuntimeError(std::string("NCCL has no ") + name + ": " + dlerror());
    return f;
  };
  NcclApi api;
  api.get_unique_id = reinterpret_cast<decltype(api.get_unique_id)>(symbol("ncclGetUniqueId"));
  api.comm_init_rank = reinterpret_cast<decltype(api.comm_init_rank)>(symbol("ncclCommInitRank"));
  api.all_reduce = reinterpret_cast<decltype(api.all_reduce)>(symbol("ncclAllReduce"));
  api.error_string = reinterpret_cast<decltype(api.error_string)>(symbol("ncclGetErrorString"));
  return api;
}
#endif

const NcclApi& nccl() {
  static std::mutex mu;
  static std::unique_ptr<NcclApi> api;
  std::lock_guard<std::mutex> lock(mu);
  if (!api) api = std::make_unique<NcclApi>(load_nccl());  // a failure is retried next time
  return *api;
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw RuntimeError(std::string(what) + " failed: " + nccl().error_string(r));
}

std::map<int, ncclComm_t>& comms() {  // by device; used only by the trainer's thread
  static std::map<int, ncclComm_t> c;
  return c;
}

}  // namespace

NcclId nccl_unique_id() {
  static_assert(sizeof(ncclUniqueId) <= sizeof(NcclId::bytes), "ncclUniqueId grew");
  ncclUniqueId id;
  check_nccl(nccl().get_unique_id(&id), "ncclGetUniqueId");
  NcclId out{};
  std::memcpy(out.bytes, &id, sizeof id);
  return out;
}

bool nccl_ready(int device) { return comms().count(device) > 0; }

void nccl_init(const NcclId& id, int rank, int size, int device) {
  ncclUniqueId nid;
  std::memcpy(&nid, id.bytes, sizeof nid);
  set_device(device);
  ncclComm_t comm = nullptr;
  check_nccl(nccl().comm_init_rank(&comm, size, nid, rank), "ncclCommInitRank");
  comms()[device] = comm;
}

void nccl_all_reduce_sum(float* data, size_t count, int device) {
  set_device(device);
  check_nccl(nccl().all_reduce(data, data, count, ncclFloat, ncclSum, comms().at(device), stream(device)),
             "ncclAllReduce");
}

}  // namespace convnet::cuda
#endif  // CONVNET_WITH_NCCL

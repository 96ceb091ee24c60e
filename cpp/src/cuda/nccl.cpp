// Gradient sums on GPUs across processes: one NCCL communicator per GPU a rank drives, spanning
// the ranks, each bucket's sum queued on the GPU's compute stream behind the backward kernels
// that wrote it. The communicator's unique id comes from rank 0; World broadcasts it over MPI.
#ifdef CONVNET_WITH_NCCL
#include <nccl.h>

#include <cstring>
#include <map>

#include "cuda/check.h"
#include "cuda/runtime.h"

namespace convnet::cuda {

namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw RuntimeError(std::string(what) + " failed: " + ncclGetErrorString(r));
}

std::map<int, ncclComm_t>& comms() {  // by device; used only by the trainer's thread
  static std::map<int, ncclComm_t> c;
  return c;
}

}  // namespace

NcclId nccl_unique_id() {
  static_assert(sizeof(ncclUniqueId) <= sizeof(NcclId::bytes), "ncclUniqueId grew");
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
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
  check_nccl(ncclCommInitRank(&comm, size, nid, rank), "ncclCommInitRank");
  comms()[device] = comm;
}

void nccl_all_reduce_sum(float* data, size_t count, int device) {
  set_device(device);
  check_nccl(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comms().at(device), stream(device)),
             "ncclAllReduce");
}

}  // namespace convnet::cuda
#endif  // CONVNET_WITH_NCCL

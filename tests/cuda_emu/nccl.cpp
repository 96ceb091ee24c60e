// cuda_emu: NCCL's calls on MPI (see include/nccl.h).
#ifdef CONVNET_WITH_MPI
#include "nccl.h"

#include <mpi.h>

#include <cstring>
#include <string>

struct cuda_emu_nccl_comm {
  int device = 0, rank = 0, size = 1;
  char id[NCCL_UNIQUE_ID_BYTES];
};

namespace {
const char kIdMark[] = "cuda_emu nccl id";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kIdMark, sizeof kIdMark);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  int world = 0, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  // The id must be rank 0's, as broadcast: an id a rank made up itself would hang real NCCL.
  if (std::memcmp(id.internal, kIdMark, sizeof kIdMark) != 0 || nranks != world || rank != me)
    return ncclInvalidArgument;
  int device = 0;
  cudaGetDevice(&device);
  *comm = new cuda_emu_nccl_comm{device, rank, nranks, {}};
  std::memcpy((*comm)->id, id.internal, sizeof id.internal);
  // Collective, as NCCL's: every rank arrives before any goes on.
  return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? ncclSuccess : ncclUnhandledCudaError;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (!comm || datatype != ncclFloat || op != ncclSum) return ncclInvalidArgument;
  const size_t bytes = count * sizeof(float);
  if (!cuda_emu::on_device(sendbuff, bytes, comm->device) || !cuda_emu::on_device(recvbuff, bytes, comm->device) ||
      cuda_emu::stream_device(stream) != comm->device)
    return ncclInvalidUsage;  // memory or a stream of another device than the communicator's
  cuda_emu::submit_host_work(stream, "ncclAllReduce", [=] {
    const void* in = sendbuff == recvbuff ? MPI_IN_PLACE : sendbuff;
    MPI_Allreduce(in, recvbuff, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }, {{sendbuff, false}, {recvbuff, true}});
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    default: return "unhandled cuda error";
  }
}
#endif  // CONVNET_WITH_MPI

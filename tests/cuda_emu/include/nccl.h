// cuda_emu's stand-in for NCCL: the calls convnet makes (cpp/src/cuda/nccl.cpp), with NCCL's
// rules checked (an initialised communicator, its device's memory), each sum done with
// MPI_Allreduce over MPI_COMM_WORLD on the emulated devices' host memory, in stream order. It
// proves the host logic around NCCL (bootstrapping, which buffers are summed when, the scaling,
// the stream order), not NCCL itself. Built only where MPI is (nccl.cpp).
#pragma once
#include <cstddef>

#include "cuda_runtime.h"

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
typedef struct cuda_emu_nccl_comm* ncclComm_t;
typedef enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclInvalidArgument = 4, ncclInvalidUsage = 5 } ncclResult_t;
typedef enum { ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
const char* ncclGetErrorString(ncclResult_t result);

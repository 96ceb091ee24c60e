#include "convnet/world.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "convnet/error.h"
#ifdef CONVNET_WITH_MPI
#include <mpi.h>
#endif
#ifdef CONVNET_WITH_NCCL
#include "cuda/runtime.h"
#endif

namespace convnet {

namespace {

// The size the launcher announces, 0 when none did (Open MPI, PMIx, MPICH / Slurm's PMI).
int launched_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

#ifdef CONVNET_WITH_MPI
void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw RuntimeError(std::string(what) + " failed: " + std::string(text, size_t(length)));
}
#endif

}  // namespace

struct World::Pending {
#ifdef CONVNET_WITH_MPI
  std::vector<MPI_Request> requests;
#endif
  std::vector<int> gpus;  // the GPUs with NCCL sums queued on their streams
};

bool mpi_compiled() {
#ifdef CONVNET_WITH_MPI
  return true;
#else
  return false;
#endif
}

World& World::get() {
  static World world;
  return world;
}

World::World() : pending_(std::make_unique<Pending>()) {
  const int launched = launched_size();
  if (launched <= 1) return;
#ifdef CONVNET_WITH_MPI
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    // Only the thread that runs the trainer talks to MPI.
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // An error in one rank must end the run, not leave the others waiting in a collective.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
#else
  throw RuntimeError("started by an MPI launcher with " + std::to_string(launched) +
                     " processes, but this build of convnet has no MPI (apt-get install libopenmpi-dev "
                     "and rebuild)");
#endif
}

World::~World() {
#ifdef CONVNET_WITH_MPI
  int finalised = 0;
  if (mpi_ && (MPI_Finalized(&finalised), !finalised)) MPI_Finalize();
#endif
}

int World::local_rank() const {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

std::string World::where() const {
  return distributed() ? "rank " + std::to_string(rank_) + " of " + std::to_string(size_) : "";
}

bool nccl_compiled() {
#ifdef CONVNET_WITH_NCCL
  return true;
#else
  return false;
#endif
}

void World::start_all_reduce_sum(Tensor& t) {
  if (!distributed()) return;
  if (t.device().is_cuda()) {
#ifdef CONVNET_WITH_NCCL
    const int device = t.device().index;
    if (!cuda::nccl_ready(device)) {  // the first sum on this GPU makes its communicator
      cuda::NcclId id{};
      if (rank_ == 0) id = cuda::nccl_unique_id();
      check_mpi(MPI_Bcast(id.bytes, int(sizeof id.bytes), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
      cuda::nccl_init(id, rank_, size_, device);
    }
    cuda::nccl_all_reduce_sum(t.data(), size_t(t.numel()), device);
    if (std::find(pending_->gpus.begin(), pending_->gpus.end(), device) == pending_->gpus.end())
      pending_->gpus.push_back(device);
    return;
#else
    throw RuntimeError("summing gradients on " + t.device().str() +
                       " across processes needs NCCL, which this build of convnet does not have");
#endif
  }
#ifdef CONVNET_WITH_MPI
  pending_->requests.emplace_back();
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.data(), int(t.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                           &pending_->requests.back()),
            "MPI_Iallreduce");
#endif
}

void World::progress() {
#ifdef CONVNET_WITH_MPI
  if (pending_->requests.empty()) return;
  int done = 0;
  check_mpi(MPI_Testall(int(pending_->requests.size()), pending_->requests.data(), &done, MPI_STATUSES_IGNORE),
            "MPI_Testall");
#endif
}

void World::finish_all_reduces() {
#ifdef CONVNET_WITH_NCCL
  for (int device : pending_->gpus) cuda::synchronize(device);
  pending_->gpus.clear();
#endif
#ifdef CONVNET_WITH_MPI
  if (pending_->requests.empty()) return;
  std::vector<MPI_Request> requests = std::move(pending_->requests);
  pending_->requests.clear();
  check_mpi(MPI_Waitall(int(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
#endif
}

void World::all_reduce_sum(std::vector<double>& values) {
  if (!distributed()) return;
#ifdef CONVNET_WITH_MPI
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, values.data(), int(values.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#endif
}

std::vector<uint64_t> World::all_gather(uint64_t value) {
  std::vector<uint64_t> all(size_t(size_), value);
#ifdef CONVNET_WITH_MPI
  if (distributed())
    check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD),
              "MPI_Allgather");
#endif
  return all;
}

void World::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef CONVNET_WITH_MPI
  if (distributed()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

}  // namespace convnet

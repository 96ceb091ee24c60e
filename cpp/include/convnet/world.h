// The processes of a run: MPI's world when the program was started by an MPI launcher
// (`mpirun -np K ...`: Open MPI, MPICH and Slurm's PMI set the environment it is known by), else
// a world of one. Data-parallel training (convnet/job.h) shards each global batch over the ranks
// and sums the gradients with start_all_reduce_sum; rank 0 alone writes checkpoints and logs.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "convnet/tensor.h"

namespace convnet {

class World {
 public:
  // The one world of this process; initialises MPI on first use when launched by MPI
  // (RuntimeError when this build has no MPI: the message says how to build it with).
  static World& get();

  int rank() const { return rank_; }
  // The rank among the processes on this host (the launcher's OMPI_COMM_WORLD_LOCAL_RANK,
  // MPI_LOCALRANKID or SLURM_LOCALID; 0 when none says): which GPU a rank takes by default.
  int local_rank() const;
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  // "rank 1 of 4" for messages ("" in a world of one).
  std::string where() const;

  // Starts summing a tensor over every rank, in place: host memory with MPI_Iallreduce, a GPU's
  // with NCCL on the GPU's compute stream (the first sum on a GPU creates its communicator,
  // collectively, from an id rank 0 broadcasts over MPI). finish_all_reduces waits for every
  // started sum, and progress() lets MPI move them on meanwhile (it moves only inside MPI
  // calls). Every rank starts the same sums in the same order; the tensor must stay as it is
  // until they finish.
  void start_all_reduce_sum(Tensor& tensor);
  void progress();
  void finish_all_reduces();
  // Sums numbers over every rank, in place.
  void all_reduce_sum(std::vector<double>& values);
  // Every rank's value, in rank order (on every rank).
  std::vector<uint64_t> all_gather(uint64_t value);
  // Ends every rank of the run at once (MPI_Abort), so that none waits forever for one that
  // failed; in a world of one, exits.
  [[noreturn]] void abort(int code);

 private:
  World();
  ~World();
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
  struct Pending;  // the started sums (MPI requests)
  std::unique_ptr<Pending> pending_;
};

// Whether this build can run across processes (it was built with MPI), and sum gradients on GPUs
// across them (built with NCCL too).
bool mpi_compiled();
bool nccl_compiled();

}  // namespace convnet

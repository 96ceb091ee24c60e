// A Net: the layers of a model definition in topological order, placed on devices, with their
// activations and gradients. forward / backward / update run one training step (the update by
// the net's solver); the statistics of the cost layers come back from forward.
#pragma once
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/op_profile.h"
#include "convnet/solver.h"
#include "convnet/spec.h"

namespace convnet {

class DeviceThreads;
class Trace;

// NaN or Inf where a pass owed numbers: an evaluation's cost, a training step's gradients
// (Python: FloatingPointError). The message names the first layer or parameter that holds it.
class NonFiniteError : public RuntimeError {
 public:
  using RuntimeError::RuntimeError;
};

struct CostReport {
  double objective = 0;  // sum over cost layers of coeff * mean cost
  int batch = 0;
  // Per cost layer, averaged over the batch: cost, top-1 error, top-5 error.
  struct Entry {
    std::string layer;
    double cost = 0, top1_error = 0, top5_error = 0;
  };
  // Error rates are NaN for a cost that does not classify, and for one whose cost is not finite
  // (NaN scores rank below nothing: counted, they would read as correct).
  std::vector<Entry> costs;
  // The entry the trainer reports: the first classifying cost layer's, else the first.
  size_t primary = 0;
};

class Net {
 public:
  // devices[d] is the physical device of logical device d; one device takes every logical
  // device; empty means everything on the CPU. A GPU listed for several logical devices
  // (cuda:0,cuda:0) gives each its own lane (stream), see lanes(); a CPU listed twice is one
  // lane (cpu:0,cpu:1 are two). A layer with several logical devices (LayerSpec::replicas) is replicated, data parallel:
  // each replica computes its part of the batch (equal, the first ones one example longer when
  // the batch does not divide). Validates the whole definition (types,
  // inputs, cycles, sizes, options) and initialises the parameters from `seed`. Throws
  // ValueError naming the offending layer.
  Net(const ModelSpec& spec, std::vector<Device> devices = {}, uint64_t seed = 1);
  ~Net();
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  // Copies a batch into an input or labels layer: images {C, H, W, N} (CHWN), labels {1, 1, 1, N}
  // or {N}. All inputs of one step must share N; a new N re-plans every layer's buffers.
  void set_input(const std::string& name, const Tensor& batch);

  // A training pass (train) reports what it computed, NaN included: the trainer decides. A test
  // pass (evaluation, prediction) throws NonFiniteError when a cost is NaN or Inf, naming the
  // cost layer and the first layer whose output is not finite, rather than report error rates.
  CostReport forward(bool train);
  // Gradients of the objective of the last forward pass with respect to every parameter.
  void backward();
  // Backward from given gradients of layers' outputs instead of the cost layers: the gradients
  // of sum over the layers of <dy, output> (as PyTorch's y.backward(dy)); the cost layers add
  // nothing. Each dy has the layer's output shape (output_shape, CHWN); a layer downstream of
  // another given one adds its gradient to that one's dy. Throws ValueError naming a layer that
  // does not exist, is an input or cost layer, or a dy of the wrong shape.
  void backward(const std::map<std::string, Tensor>& output_grads);
  // Whether backward also computes the gradient with respect to input layer `name` (off by
  // default: the first layers then skip computing the gradient of their inputs).
  void set_input_grad(const std::string& name, bool on);
  // That gradient (CHWN, the batch's shape) from the last backward; zeros where no gradient
  // reached the input. Throws ValueError unless set_input_grad(name, true) came before it.
  const Tensor& input_grad(const std::string& name) const;
  // A training pass: forward(true) then backward(), returning forward's report. With CUDA graphs
  // on, the first call runs eagerly (allocating every buffer), the second captures both passes
  // into a graph, and every call replays it with a single launch; a new batch size, seed or math
  // mode captures again.
  CostReport forward_backward();
  // CUDA graphs for forward_backward: off by default. Needs every layer on one GPU (ValueError
  // naming a layer that is not). Profiling runs the passes eagerly (it times each layer).
  void set_cuda_graph(bool on);
  bool cuda_graph() const { return use_graph_; }
  // Kernels, copies and GEMMs in the captured graph (0 while none is captured).
  size_t cuda_graph_nodes() const;
  // Fused backward passes (on by default): an LRN layer whose output only a pool layer on its
  // device reads goes back through both in one op (Layer::backward_through_pool), and the
  // gradient of its output is not allocated. Off: every layer runs its own backward (the same
  // numbers; for tests and comparisons).
  void set_fusion(bool on);
  bool fusion() const { return fusion_; }
  // The LRN layers that go back through their pool while fusion is on.
  std::vector<std::string> fused_layers() const;
  // One solver step on every parameter (SGD, the paper's rule, unless set_solver chose another),
  // each parameter's learning rate scaled by lr_scale.
  // ValueError unless lr_scale is finite and >= 0 (checked before any parameter changes).
  void update(float lr_scale = 1.f);
  // update's check of lr_scale, for callers that validate before the passes.
  static void check_lr_scale(float lr_scale);

  // Diagnosis of NaN and Inf (each copies tensors to the host: for after a non-finite cost, not
  // for every pass). The first layer, in topological order, whose output of the last forward
  // pass holds NaN or Inf, e.g. "layer 'fc8' (fc): nan at example 3 (its parameter
  // 'fc8.weights' holds nan)"; "" when every output is finite.
  std::string first_nonfinite_output() const;
  // The first parameter (in params() order) whose gradient from the last backward holds NaN or
  // Inf, e.g. "the gradient of 'conv1.weights' holds nan"; "" when every gradient is finite.
  std::string first_nonfinite_gradient();

  // The solver update() applies (convnet/solver.h; "sgd" until set). Another name gives every
  // parameter fresh (zero) state and restarts the solver's step counter; the same name only
  // takes the new hyperparameters and keeps the state. ValueError for invalid options.
  void set_solver(const SolverOptions& options);
  Solver& solver() { return *solver_; }
  const Solver& solver() const { return *solver_; }

  // Parameter gradients live in flat per-lane buffers, filled in the order backward produces
  // them (the parameters in reverse topological order), each up to kBucketBytes unless one
  // parameter alone is larger; every Param::grad is a view into its bucket. An all-reduce
  // between backward and update works on the flat tensors. Each parameter starts at a multiple
  // of kBucketAlign floats; the gaps are zero and stay zero.
  struct GradientBucket {
    Device device;
    Tensor flat;                   // {floats}
    std::vector<Param*> params;    // in bucket order
    std::vector<int64_t> offsets;  // of each parameter's gradient in `flat`, in floats
  };
  static constexpr int64_t kBucketBytes = int64_t(25) << 20;
  static constexpr int64_t kBucketAlign = 64;  // floats: 256 bytes, cudaMalloc's alignment
  const std::vector<GradientBucket>& gradient_buckets() const { return buckets_; }
  // Called during backward with a bucket's index as soon as every gradient in it is final (in
  // bucket order, which is backward's, on the thread that called backward, even while devices
  // run side by side: MPI collectives must start in the same order on every rank), so that its
  // all-reduce can start while backward goes on. Not called when the passes replay a CUDA
  // graph; an empty function: none.
  void set_bucket_ready_hook(std::function<void(size_t)> hook) { bucket_ready_ = std::move(hook); }

  // The layer's output for the whole batch (a replicated layer's parts gathered).
  const Tensor& output(const std::string& layer) const;
  Shape output_shape(const std::string& layer) const;
  // The parameters the solver trains; a replicated layer's are its first replica's, which the
  // others copy before each forward pass.
  std::vector<Param*> params();
  Param& param(const std::string& name);
  int64_t parameter_count() const;
  const std::vector<Layer*>& layers() const { return order_; }
  Layer& layer(const std::string& name) const;
  Device device_of(const std::string& layer) const;
  const ModelSpec& spec() const { return spec_; }
  int batch_size() const { return batch_; }
  // The training-step counter: it keys the dropout masks and advances with update().
  uint64_t step() const { return step_; }
  void set_step(uint64_t step) { step_ = step; }
  uint64_t seed() const { return seed_; }
  // Where the batch just fed lies in a data-parallel global batch (dropout draws each example's
  // mask by its place there). set_input resets it to the default, the whole batch.
  void set_batch_shard(const BatchShard& shard) { shard_ = shard; }
  // The seed keys the dropout masks too: a resumed run sets the checkpoint's seed.
  void set_seed(uint64_t seed);
  // cuBLAS math on this net's GPUs (fp32 by default; the CPU always computes in fp32).
  void set_math_mode(MathMode mode) { math_mode_ = mode; }
  MathMode math_mode() const { return math_mode_; }

  // Where the layers run side by side: a physical device, and on a GPU given for several
  // logical devices one of its streams. Lanes in order of first use. With more than one, each
  // runs its layers on its own host thread, side by side with the others: a layer waits only
  // for the layers it reads (edges between lanes are copies ordered by events), and in backward
  // for its readers on other lanes, whose gradients for it are added last (in reverse
  // topological order). The numbers are those of one lane except for that order of summation,
  // which matters only where a layer has three readers or more; they never depend on timing.
  struct Lane {
    Device device;
    int index = 0;  // among the lanes of its device; 0 on the CPU
    std::string name() const;  // "cuda:0", "cuda:0 lane 1"
    bool operator==(const Lane& o) const { return device == o.device && index == o.index; }
  };
  const std::vector<Lane>& lanes() const { return lanes_; }
  // Pairs of this net's GPUs that cannot reach each other's memory: copies between them are
  // staged through host memory by the driver (slower). Others copy peer to peer (NVLink, PCIe).
  const std::vector<std::pair<Device, Device>>& gpus_without_peer_access() const {
    return gpus_without_peer_access_;
  }
  // OpenMP threads of each CPU device while several lanes run side by side (0, the default:
  // the process's threads split evenly among the CPU devices).
  void set_device_threads(int threads) { device_threads_ = threads; }
  int threads_per_cpu_device() const;
  // Records a span for every layer's forward and backward (and every gradient brought across a
  // device edge) into `trace`, until set_trace(nullptr). On a GPU each span waits for the
  // layer's kernels, so it shows device time at the cost of a synchronisation per layer.
  void set_trace(Trace* trace) { trace_ = trace; }

  // Per-layer wall time, accumulated over passes while profiling is on (for finding where a
  // step's time goes). On a GPU the device is waited for before and after each layer, so a
  // layer's time is its kernels' (and a GPU's lanes do not overlap while profiling). A pool layer
  // whose LRN goes back through it (set_fusion) counts no backward calls: the LRN's include it.
  // The ops of each pass that share a layer's time with others (GEMMs, im2col, col2im, bias,
  // neuron) are timed within it too, with their work (convnet/op_profile.h).
  struct LayerTime {
    std::string layer;
    double forward_ms = 0, backward_ms = 0;
    int64_t forward_calls = 0, backward_calls = 0;
    OpTimes forward_ops, backward_ops;
  };
  void set_profiling(bool on);
  std::vector<LayerTime> layer_times() const;

  // The memory this net holds, block by block, each block counted once: under the first entry
  // that names it, in the order of the kinds below (a parameter's gradient is a view of its
  // bucket; an output another layer reads in place is that layer's output). Sizes as allocated;
  // buffers not yet allocated (before the first step) are absent. For finding what to shrink.
  struct MemoryUse {
    // "parameters", "parameter gradients", "solver state", "activations",
    // "activation gradients", "layer buffers", "device copies", "workspace"
    std::string kind;
    std::string layer;  // "" for the net's own: gradient buckets, workspaces
    std::string what;   // "weights", "output", "velocity", "denominators", ...
    Device device;
    int64_t bytes = 0;
  };
  std::vector<MemoryUse> memory_use() const;

 private:
  struct Node;
  void plan(int batch);
  // Output gradients: shared, layers whose gradients are never live at once take turns in a
  // slab per lane (an unseeded backward); else each its own (a backward from given gradients,
  // live from the start). Drops the captured graph.
  void plan_output_grads(bool shared);
  bool grads_shared_ = true;
  // n's output gradient, allocated (or placed in its slab) on first use.
  Tensor& output_grad(Node& n);
  void initialise_params();
  void make_gradient_buckets();
  void forward_node(Node& n);
  // Before n's output is written again: orders that after the copies of it that readers on other
  // GPUs queued in the last pass (nothing elsewhere).
  void before_writing_output(Node& n);

  // The pass's context as node n sees it (a replica: its examples' place in the batch).
  PassContext context(const Node& n) const;
  // On a replicated layer's primary, after its backward: adds the other replicas' parameter
  // gradients to its own, in replica order.
  void sum_replica_grads(Node& n);
  void backward_node(Node& n);
  void run_backward();
  bool seeded_ = false;  // the running backward starts from given output gradients
  // On n's device thread, before n's backward: adds the gradients its readers on other devices
  // computed for it (after the readers' own, on n's device, were written in place).
  void receive_output_grads(Node& n);
  // Runs job(slot) on every lane's thread (with the CPU devices' thread shares and each GPU
  // lane's stream), between a fork and a join of the GPU lanes (LaneSync).
  void run_on_devices(size_t events, const std::function<void(int)>& job,
                      const std::function<void()>& host_work = {});
  void record(const Node& n, const char* phase, double start_us, const std::string& what = {});
  // After node n's backward: its parameters' gradients are final; calls the hook for buckets now
  // complete.
  void gradients_done(Node& n);
  Node& node(const std::string& name) const;

  ModelSpec spec_;
  std::vector<Device> devices_;
  uint64_t seed_ = 1, step_ = 0;
  BatchShard shard_;
  int batch_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;   // in topological order
  std::vector<Layer*> order_;
  std::map<std::string, Node*> by_name_;
  std::vector<Lane> lanes_;
  struct LaneState;  // per lane: its layers' workspace
  std::vector<std::unique_ptr<LaneState>> lane_state_;
  std::vector<std::pair<Device, Device>> gpus_without_peer_access_;
  struct LaneSync;   // the GPU lanes' fork and join at the edges of a pass (net.cpp)
  std::unique_ptr<LaneSync> lane_sync_;
  std::unique_ptr<DeviceThreads> threads_;
  int device_threads_ = 0;
  Trace* trace_ = nullptr;
  PassContext last_pass_;
  std::set<std::string> fresh_inputs_;  // inputs set since the last forward pass
  bool profiling_ = false;
  void settle_for_profile(const Device& device) const;
  bool fusion_ = true;
  MathMode math_mode_ = MathMode::Fp32;
  std::unique_ptr<Solver> solver_;
  std::vector<GradientBucket> buckets_;
  std::map<const Param*, size_t> bucket_of_;   // each parameter's bucket
  std::vector<size_t> bucket_waiting_;         // its parameters not yet final in this backward
  std::unique_ptr<std::atomic<bool>[]> bucket_final_;  // set by device threads, read by the host
  std::function<void(size_t)> bucket_ready_;
  void apply_math_mode();
  void run_forward(bool train);
  CostReport cost_report() const;
  // The captured forward_backward (net.cpp); declared last, so destroyed before the buffers it
  // uses.
  struct Graph;
  bool use_graph_ = false;
  std::unique_ptr<Graph> graph_;
  void drop_graph();
};

}  // namespace convnet

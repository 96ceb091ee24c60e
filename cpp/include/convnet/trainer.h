// The training loop, shared by the Python API, the `convnet` CLI and the convnet-train binary:
// epochs of batches from a Pipeline, tests every N batches and at each epoch's end, learning-rate
// schedules per layer group, a watch for divergence, checkpoints, and a JSON-lines log.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "convnet/data.h"
#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/schedule.h"
#include "convnet/trace.h"
#include "convnet/world.h"

namespace convnet {

// A run that produced a non-finite cost or gradient (or a gradient norm above the limit). The
// message says where, and which checkpoint is the last good one.
class DivergenceError : public RuntimeError {
 public:
  using RuntimeError::RuntimeError;
};

// Cost and errors of the first cost layer: means over `examples` examples.
struct Metrics {
  double cost = 0, top1_error = 0, top5_error = 0;
  int64_t examples = 0;
  // Examples that could not be read (DataError) and were skipped. A pipeline replaces each by
  // the next readable one of the epoch (Batch::skipped), which `examples` then counts in its
  // place; the 10-view test leaves them out of `examples` (left_out). The first of them as
  // skipped_example_text ("'<path>': <why>"), "" when none.
  int64_t skipped = 0;
  bool left_out = false;
  std::string first_skipped;
  // Folds in the means of a batch of `batch` examples (a running, example-weighted mean).
  void add(const CostReport::Entry& batch_means, int batch);
  // Counts a batch's (or one example's) skips.
  void add_skipped(int64_t count, const std::string& first);
};

// What the reports add when examples were skipped, e.g. "3 of 10000 test images unreadable,
// skipped: first 'val/cat/x.png': not a JPEG or PNG image" for `set` "test"; "" when none were.
std::string skipped_note(const Metrics& m, const std::string& set);

struct TrainerOptions {
  int epochs = 10;
  int test_every = 0;    // also test every N training batches (0: at each epoch's end only)
  int test_batches = 0;  // batches of the test set per test (0: all of it)
  // Learning-rate schedules by layer group, first match wins: a layer-name prefix, or "*" for
  // every layer. Layers no group matches keep their model-definition rates.
  std::vector<std::pair<std::string, Schedule>> schedules = {{"*", Schedule()}};
  std::string save_dir;  // checkpoints go here (empty: none)
  int save_every = 0;    // also every N batches (0: at each epoch's end only)
  int keep = 3;          // checkpoints kept in save_dir (<= 0: all)
  std::string log_path;  // JSON-lines metrics log, appended to (empty: none)
  double max_grad_norm = 0;  // stop when the gradient norm exceeds it (0: only non-finite stops)
  // A timeline of kTraceSteps training steps (after the run's first, which allocates), written
  // here as Chrome trace JSON by rank 0: every layer on its device's track, the step's phases on
  // the host's (empty: none).
  std::string trace_path;
  static constexpr int kTraceSteps = 3;
  // The solver the net trains with (convnet/solver.h): the Trainer sets it on the net (whose
  // state is kept when the net already has a solver of that name) and records it in run_info
  // under "solver". A resume needs the checkpoint's solver (its name; changed hyperparameters
  // are reported).
  SolverOptions solver;
  // Anything a later `convnet test` or `predict` needs to read the data as training did (data
  // set, mean, scale, crop, class names): stored in every checkpoint's state under "run".
  nlohmann::json run_info = nlohmann::json::object();
};

struct BatchEvent {
  int64_t epoch = 0, batch = 0, batches = 0, step = 0;  // epoch and batch count from 1
  double epoch_float = 0;  // epochs done, fractional
  Metrics train;           // this batch
  double lr = 0;           // the first parameter's rate
  double grad_norm = 0, elapsed_s = 0, images_per_s = 0;
};
struct TestEvent {
  int64_t epoch = 0, batch = 0, step = 0;
  double epoch_float = 0, elapsed_s = 0;
  Metrics test;
  bool lr_dropped = false;  // a plateau schedule lowered its rate after this test
};
struct EpochEvent {
  int64_t epoch = 0, step = 0;
  // test.examples == 0 when there is no test set. train.skipped counts this epoch's unreadable
  // training examples (those of the part before a resume included), test.skipped the test's.
  Metrics train, test;
  double lr = 0, elapsed_s = 0, epoch_s = 0;
  std::string checkpoint;  // written at this epoch's end ("" when none)
};

// Under an MPI launcher (convnet/world.h) each rank's Trainer trains on its shard of every
// global batch (its train Pipeline's shard), the gradients summed over the ranks before each
// update; the metrics it reports are the global batch's, and rank 0 alone logs and checkpoints.
class Trainer {
 public:
  // `test` may be null. Both pipelines yield batches for the net's single input and labels
  // layers. Throws ValueError when a schedule group matches no layer.
  Trainer(Net& net, Pipeline& train, Pipeline* test, TrainerOptions options);

  // Continues the run saved in a checkpoint file, or in the newest checkpoint of a folder: the
  // net's parameters, momentum, step and seed, the schedules' state and the position in the
  // data, so that on the CPU the resumed run's weights equal an uninterrupted run's bit for bit.
  // A schedule group whose schedule changed since the checkpoint is never changed silently: a
  // plateau schedule that stays a plateau keeps its record (best error, tests without
  // improvement, drops), any other change starts the new schedule afresh; either way a line
  // saying so is returned, for the caller to show (empty when nothing changed).
  std::vector<std::string> resume(const std::string& checkpoint_or_dir);

  struct Result {
    int64_t epochs_done = 0, step = 0;
    Metrics train, test;  // of the last epoch (test: of the last test)
    bool stopped = false;         // a callback asked to stop
    std::string last_checkpoint;  // "" when none was written
    double elapsed_s = 0;
  };
  // Trains up to options.epochs. Throws DivergenceError on divergence (no update is applied
  // with a non-finite gradient; checkpoints already written stay as they are).
  Result run();

  // Called after each batch, test and epoch; returning false from on_batch or on_epoch stops
  // the run after saving a checkpoint (when save_dir is set), so that it can be resumed.
  std::function<bool(const BatchEvent&)> on_batch;
  std::function<void(const TestEvent&)> on_test;
  std::function<bool(const EpochEvent&)> on_epoch;

  const TrainerOptions& options() const { return options_; }

 private:
  struct State;
  void set_rates(double epoch_float);
  // resume's part for the schedules' state (see resume); returns the lines about changes.
  std::vector<std::string> restore_schedules(const nlohmann::json& saved);
  // Tests, lets plateau schedules see the result, logs it and calls on_test.
  Metrics run_test(int64_t epoch, int64_t batch, double epoch_float,
                   const std::function<double()>& elapsed);
  std::string save(int64_t epoch, int64_t batch, const Metrics& epoch_train);
  void log(const nlohmann::json& line);
  // Sum of squares of every gradient, over the net's gradient buckets: one reduction per device
  // (one sync per GPU), the devices in order of first appearance.
  double gradient_sum_squares();
  // Data parallelism: forward and backward with each gradient bucket's sum over the ranks
  // started as soon as backward has finished the bucket; returns with every sum done, wait_s the
  // time they took after backward (the part not hidden behind it).
  CostReport forward_backward_summed(double share, double& wait_s);
  // Weights this rank's gradients in a bucket by its share of the global batch and starts their
  // sum over the ranks (host memory; World::finish_all_reduces ends it).
  void start_gradient_sum(size_t bucket, double share);
  uint64_t weights_hash();
  [[noreturn]] void diverged(const std::string& what, int64_t epoch, int64_t batch);

  Net& net_;
  World& world_ = World::get();
  Pipeline& train_;
  Pipeline* test_;
  TrainerOptions options_;
  std::string input_, labels_;
  std::vector<int> group_of_param_;  // index into options_.schedules, -1: none
  // A parameter's own schedule (its layer's scheduleW/scheduleB), which wins over the groups'.
  std::vector<std::optional<Schedule>> own_schedule_;
  // Where the run is: epoch (from 0) and the next batch in it; sums of the epoch so far.
  int64_t epoch_ = 0, next_batch_ = 0;
  Metrics epoch_sums_, last_test_;
  double elapsed_before_ = 0;  // training time of the run before a resume
  // The step timeline (options_.trace_path): steps trained by this run() and the trace.
  int64_t steps_run_ = 0;
  std::unique_ptr<Trace> trace_;
  void trace_span(const char* name, double start_us);
  void write_trace();
  std::string last_checkpoint_;
};

// Cost and errors of `net` over a pipeline (test mode: no dropout, no update), from its first
// batch; max_batches 0 means the whole epoch.
Metrics evaluate(Net& net, Pipeline& data, int max_batches = 0);

// AlexNet's test with 10 views: each example's 4 corner and centre crops and their reflections,
// the softmax outputs averaged. `augment` gives crop size, mean subtraction and scale.
Metrics evaluate_multiview(Net& net, const DataSource& source, const DataStats& stats,
                           const AugmentOptions& augment, int batch = 128,
                           const std::function<void(int64_t, int64_t)>& progress = {});

// The one check that a training pass may update: "" when the report's objective is finite, else
// what is wrong ("the cost is nan"), with " because the input batch holds NaN or Inf" when the
// net's inputs do (ReLU may hide NaN from the cost, never from the inputs).
std::string nonfinite_cost(const Net& net, const CostReport& report);

// One training step outside a Trainer, on the batch already fed: forward and backward, the cost
// and the gradients checked (DivergenceError saying why, the parameters untouched; ValueError for
// an lr_scale that is negative or not finite), the update at lr_scale.
CostReport train_step(Net& net, float lr_scale = 1.f);

// The names of a net's single input and labels layers; ValueError when it has not exactly one.
std::pair<std::string, std::string> input_and_labels(const Net& net);

}  // namespace convnet

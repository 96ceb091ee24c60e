// A training job: everything a run needs besides its model, prepared in one place for the three
// ways to start one (`convnet-train`, `convnet train`, `convnet.train()`):
//
//   job_options()   the options' names, cuda-convnet2 aliases, defaults and help: the one table
//                   both commands build their parsers from
//   JobOptions      those options read and checked (JobOptions::parse)
//   RunData         the data set by name, its statistics, mean and scale, the pipelines'
//                   settings and what a checkpoint records about them (run_info)
//   Job             the net on its devices, the pipelines (page-locked for a GPU input), the
//                   trainer with its schedules, solver, run folder and log, and the resume (the
//                   checkpoint's seed, schedules and place in the data)
//
// The front ends keep only argument parsing, the model's source (a file, --layer-params, the
// Python zoo), progress display, callbacks and plots.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "convnet/dataset.h"
#include "convnet/spec.h"
#include "convnet/trainer.h"

namespace convnet {

struct JobOption {
  std::string name;                  // --name, as `convnet train` spells it
  std::vector<std::string> aliases;  // cuda-convnet2's names, accepted by convnet-train
  std::string value;                 // placeholder in --help ("N", "DIR"); empty for a flag
  std::string fallback;              // the default, as text ("" when it has none)
  std::string help;
  bool repeatable = false;           // each use adds a value (--group)
  std::string bare;                  // the value when given without one ("" : a value is required)
};
// Every option of a training job, in --help order. Defaults come from the structs that use them
// (DataOptions, PipelineOptions, TrainerOptions, SolverOptions), so the table cannot disagree.
const std::vector<JobOption>& job_options();

// How a run reads its data: the data set (dataset.h's names) and the AlexNet augmentation.
struct DataOptions {
  std::string data = "fashion-mnist";
  int image_size = 256;       // decoded side of folder images
  int crop = 0;               // random crops in training, the centre crop in test (0: none)
  bool mirror = false;
  int jitter_min = 0, jitter_max = 0;  // VGG's scale jittering in training (0: off)
  int test_scale = 0;                  // VGG's single-scale test (0: off)
  float pca_std = 0.f;
  bool pca_rescale = false;
  std::string mean = "scalar";  // subtract the training pixels' mean value, the mean image, or none
  std::string scale = "std";    // a number, or "std": 1 / the training pixels' standard deviation
  int64_t stats_sample = 10000;  // training images the statistics are computed from
  std::string stats_path;        // a statistics file to read, or to write when absent ("" : none)
};

struct JobOptions {
  DataOptions data;
  int batch = 0;
  uint64_t seed = 0;
  bool seed_given = false;           // --seed was on the command line (a resume must not change it)
  int workers = 0, threads = 0;      // threads 0: all cores
  int device_threads = 0;            // per CPU device side by side (0: threads split evenly)
  std::string device;                // "cpu", "cuda:0", "cuda:0,cuda:1"
  MathMode math = MathMode::Fp32;
  bool cuda_graph = false;
  std::optional<float> lr;           // every parameter's base rate (none: the model's)
  std::string resume;                // "", "auto" (save_dir's newest, when there is one), a file or folder
  bool overwrite = false;            // start again in a save_dir that holds checkpoints
  bool resume_other_data = false;    // a resume may read another data set than its run (fine-tuning)
  bool multiview_test = false;
  int print_every = 0;
  bool quiet = false;
  TrainerOptions trainer;            // run_info is filled by the Job

  // Reads (name, value) pairs: a name or alias of job_options() (ValueError naming an unknown
  // one), a flag's value "1"/"true" or "0"/"false"; later pairs win, a repeatable option
  // collects them. Absent options take their defaults. Every value is checked here, naming the
  // option: a whole number, a schedule, a solver, "--adam-betas apply to adamw only", ...
  static JobOptions parse(const std::vector<std::pair<std::string, std::string>>& args);
};

// The data side of a run: opens the data set, computes (or reads) the statistics its mean,
// scale and colour noise need, and says how the pipelines read it.
class RunData {
 public:
  // progress(done, total) while the statistics are computed (only then).
  explicit RunData(DataOptions options, const std::function<void(int64_t, int64_t)>& progress = {});
  // The data a checkpoint's run read, read the way it read them: its run_info (crop, mean,
  // scale and mean value as trained), or `data` for another data set.
  static RunData of_run(const nlohmann::json& run_info, const std::string& data = "");

  const DataOptions& options() const { return options_; }
  const Dataset& dataset() const { return dataset_; }
  const DataStats& stats() const { return stats_; }
  float mean_value() const { return mean_value_; }
  float scale() const { return scale_; }
  int channels() const;
  int input_size() const;  // the side of the images the net sees (the crop, else the source's)
  int classes() const;
  std::vector<std::string> class_names() const;
  // The pipeline's augmentation for training or test.
  AugmentOptions augment(bool train) const;
  // `shard` of `shards` for data parallelism across processes (the Job's ranks).
  PipelineOptions pipeline_options(bool train, int batch, uint64_t seed, int workers, bool pinned,
                                   int shard = 0, int shards = 1) const;
  // What `convnet test` and `predict` need to read data as training did (run_info's data part).
  nlohmann::json info() const;

 private:
  RunData() = default;
  DataOptions options_;
  Dataset dataset_;
  DataStats stats_;
  float mean_value_ = 0.f, scale_ = 1.f;
};

// The physical devices of a net's logical ones: "cpu" or "cuda:0" for all of them, or a
// comma-separated list with one per logical device (a layer's `device` option), as Net takes
// them; a GPU listed again runs its second logical device on a lane of its own (Net::lanes).
std::vector<Device> parse_devices(const std::string& text);

class Job {
 public:
  // Prepares the run (see the top of this file). With options.resume it continues the
  // checkpoint's run: the net is built with its seed and the trainer restored from it. Under an
  // MPI launcher (convnet/world.h) every rank prepares the same run and reads its shard of each
  // global batch of options.batch (which must divide by the ranks); a resume needs the world
  // size its checkpoint was written with.
  // ValueError when save_dir holds checkpoints of another run and neither resume nor overwrite
  // is set (overwrite removes them and the log).
  Job(const ModelSpec& model, std::shared_ptr<const RunData> data, const JobOptions& options);
  ~Job();

  Net& net() { return *net_; }
  Trainer& trainer() { return *trainer_; }
  Pipeline& train_pipeline() { return *train_; }
  Pipeline& test_pipeline() { return *test_; }
  const RunData& data() const { return *data_; }
  const JobOptions& options() const { return options_; }
  // The checkpoint resumed from ("" : a new run) and the lines about schedules that changed
  // since it (Trainer::resume).
  const std::string& resumed_from() const { return resumed_from_; }
  const std::vector<std::string>& resume_notes() const { return resume_notes_; }
  // "N parameters on <data>: A training and B test images, batch ..., device ..., solver ..."
  std::string description() const;

  Trainer::Result run() { return trainer_->run(); }
  // AlexNet's 10-view test on the test set (ValueError without a crop).
  Metrics multiview_test(const std::function<void(int64_t, int64_t)>& progress = {});

 private:
  JobOptions options_;
  std::shared_ptr<const RunData> data_;
  std::unique_ptr<Net> net_;
  std::unique_ptr<Pipeline> train_, test_;
  std::unique_ptr<Trainer> trainer_;
  std::string resumed_from_;
  std::vector<std::string> resume_notes_;
};

}  // namespace convnet

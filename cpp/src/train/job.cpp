// RunData and Job: the one place a training run is prepared (see convnet/job.h).
#include "convnet/job.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "convnet/checkpoint.h"
#include "convnet/world.h"
#include "cpu/cpu_ops.h"

namespace convnet {

namespace fs = std::filesystem;

// ---- RunData ----

RunData::RunData(DataOptions options, const std::function<void(int64_t, int64_t)>& progress)
    : options_(std::move(options)) {
  const DataOptions& o = options_;
  CONVNET_CHECK(o.mean == "scalar" || o.mean == "image" || o.mean == "none", "mean '", o.mean,
                "' must be scalar, image or none");
  dataset_ = open_dataset(o.data, o.image_size);
  if (!o.stats_path.empty() && fs::exists(o.stats_path)) {
    stats_ = load_stats(o.stats_path);
  } else if (o.mean != "none" || o.pca_std > 0 || o.scale == "std") {
    stats_ = compute_stats(*dataset_.train, o.stats_sample, progress);
    if (!o.stats_path.empty()) save_stats(stats_, o.stats_path);
  }
  if (o.mean == "scalar")
    mean_value_ = float(std::accumulate(stats_.mean.begin(), stats_.mean.end(), 0.0) /
                        double(std::max<size_t>(stats_.mean.size(), 1)));
  scale_ = parse_scale(o.scale, stats_);
  const int side = std::min(dataset_.train->height(), dataset_.train->width());
  CONVNET_CHECK(o.crop <= side, "crop ", o.crop, " is larger than the data set's ", side, "-pixel images");
}

RunData RunData::of_run(const nlohmann::json& run, const std::string& data) {
  RunData r;
  DataOptions& o = r.options_;
  o.data = !data.empty() ? data : run.value("data", std::string());
  CONVNET_CHECK(!o.data.empty(), "the checkpoint does not say which data it was trained on: give the data set");
  o.image_size = run.value("image_size", o.image_size);
  o.crop = run.value("crop", 0);
  o.test_scale = run.value("test_scale", 0);  // `convnet test` tests as the run did
  o.mean = run.value("mean", std::string("scalar"));
  // Runs before the scale option read pixels times 1/255.
  r.scale_ = run.value("scale", 1.f / 255.f);
  o.scale = std::to_string(r.scale_);
  r.mean_value_ = run.value("mean_value", 0.f);
  r.dataset_ = open_dataset(o.data, o.image_size);
  if (o.mean == "image") r.stats_ = compute_stats(*r.dataset_.train, o.stats_sample);
  return r;
}

int RunData::channels() const { return dataset_.train->channels(); }

int RunData::input_size() const {
  return options_.crop ? options_.crop : std::min(dataset_.train->height(), dataset_.train->width());
}

int RunData::classes() const { return dataset_.train->classes(); }

std::vector<std::string> RunData::class_names() const { return dataset_.class_names; }

AugmentOptions RunData::augment(bool train) const {
  AugmentOptions a;
  a.crop = options_.crop;
  a.mirror = train && options_.mirror;
  a.jitter_min = train ? options_.jitter_min : 0;
  a.jitter_max = train ? options_.jitter_max : 0;
  a.test_scale = train ? 0 : options_.test_scale;
  a.pca_std = train ? options_.pca_std : 0.f;
  a.pca_rescale = train && options_.pca_rescale;
  a.subtract_mean_image = options_.mean == "image";
  a.mean_value = mean_value_;
  a.scale = scale_;
  return a;
}

PipelineOptions RunData::pipeline_options(bool train, int batch, uint64_t seed, int workers,
                                          bool pinned, int shard, int shards) const {
  PipelineOptions p;
  p.shard = shard;
  p.shards = shards;
  p.batch = batch;
  p.train = train;
  p.shuffle = train;
  p.seed = seed;
  p.workers = workers;
  p.reuse_batch_memory = true;  // the trainer copies each batch into the net before the next
  p.pinned_memory = pinned;
  p.augment = augment(train);
  return p;
}

nlohmann::json RunData::info() const {
  const DataSource& s = *dataset_.train;
  const DataOptions& o = options_;
  return {{"data", o.data}, {"image_size", o.image_size},
          {"source_size", s.height() == s.width() ? nlohmann::json(s.height()) : nlohmann::json()},
          {"crop", o.crop}, {"mean", o.mean}, {"mean_value", mean_value_}, {"scale", scale_},
          {"mirror", o.mirror}, {"scale_jitter", {o.jitter_min, o.jitter_max}}, {"test_scale", o.test_scale},
          {"pca_std", o.pca_std}, {"pca_rescale", o.pca_rescale},
          {"class_names", dataset_.class_names}};
}

// ---- devices ----

std::vector<Device> parse_devices(const std::string& text) {
  std::vector<Device> devices;
  std::stringstream in(text);
  for (std::string d; std::getline(in, d, ',');) devices.push_back(Device::parse(d));
  CONVNET_CHECK(!devices.empty(), "no device given (cpu, cuda:0, or a list: cuda:0,cuda:1)");
  return devices;  // one device takes every logical device (Net)
}

// ---- Job ----

namespace {

// The checkpoint a run continues from: options.resume as a file, a folder's newest intact one, or
// "auto" (save_dir's newest intact one when there is one); "" for a new run. A folder's damaged
// newer checkpoints are set aside, each with a line in `notes`.
std::string checkpoint_to_resume(const std::string& resume, const std::string& save_dir,
                                 std::vector<std::string>& notes) {
  if (resume.empty()) return "";
  const bool set_aside = World::get().rank() == 0;  // one rank renames files in a shared folder
  if (resume == "auto")
    return fs::is_directory(save_dir) ? newest_intact_checkpoint(save_dir, notes, set_aside) : "";
  if (fs::is_directory(resume)) {
    const std::string latest = newest_intact_checkpoint(resume, notes, set_aside);
    CONVNET_CHECK(!latest.empty(), "--resume: no checkpoint in '", resume, "'");
    return latest;
  }
  CONVNET_CHECK(fs::is_regular_file(resume), "--resume: '", resume, "' is neither a checkpoint file nor a run folder");
  return resume;
}

// A data set spec as a path where it names one, so that "./data" and "data" agree.
std::string same_data_key(const std::string& spec) {
  std::error_code ec;
  if (!fs::exists(spec, ec)) return spec;
  const fs::path canonical = fs::weakly_canonical(spec, ec);
  return ec ? spec : canonical.string();
}

// A resume continues its run: the seed (data order, dropout masks) and the data set are the
// checkpoint's, and an option that asks for others is refused rather than half obeyed.
void check_resume_matches(const JobOptions& o, const std::string& checkpoint, uint64_t saved_seed,
                          const nlohmann::json& run, const std::string& data) {
  CONVNET_CHECK(!o.seed_given || o.seed == saved_seed, "--resume: --seed ", o.seed, " differs from the seed ",
                saved_seed, " of the run in '", checkpoint, "'; a resumed run keeps its seed (its data order and "
                "dropout masks): leave --seed out, or start a new run (--overwrite or another --save-dir)");
  const std::string saved_data = run.value("data", std::string());
  CONVNET_CHECK(saved_data.empty() || o.resume_other_data || same_data_key(saved_data) == same_data_key(data),
                "--resume: the run in '", checkpoint, "' trained on --data '", saved_data, "', this run reads '", data,
                "': give --data ", saved_data, " to continue it, or add --resume-other-data to fine-tune on '",
                data, "'");
}

// A save_dir that holds another run's checkpoints is never written into silently.
void claim_run_folder(const TrainerOptions& t, bool overwrite) {
  if (t.save_dir.empty() || !fs::is_directory(t.save_dir) || latest_checkpoint(t.save_dir).empty()) return;
  CONVNET_CHECK(overwrite, t.save_dir, " holds checkpoints of an earlier run: --resume to continue it, "
                "--overwrite to start again, or another --save-dir");
  for (const std::string& path : list_checkpoints(t.save_dir)) fs::remove(path);
  if (!t.log_path.empty()) fs::remove(t.log_path);
}

}  // namespace

Job::Job(const ModelSpec& model, std::shared_ptr<const RunData> data, const JobOptions& options)
    : options_(options), data_(std::move(data)) {
  const JobOptions& o = options_;
  if (o.threads > 0) cpu::set_num_threads(o.threads);
  TrainerOptions t = o.trainer;
  const World& world = World::get();
  CONVNET_CHECK(o.batch % world.size() == 0, "--batch ", o.batch, " does not split over ", world.size(),
                " processes: the global batch must be a multiple of the number of ranks");
  if (!t.save_dir.empty() && world.rank() == 0)
    for (const std::string& debris : remove_stale_temporaries(t.save_dir))
      resume_notes_.push_back("removed '" + debris + "', left by a save that was killed");
  resumed_from_ = checkpoint_to_resume(o.resume, t.save_dir, resume_notes_);
  if (resumed_from_.empty() && world.rank() == 0) claim_run_folder(t, o.overwrite);
  uint64_t seed = o.seed;
  if (!resumed_from_.empty()) {
    const CheckpointMeta meta = read_checkpoint_meta(resumed_from_);
    // The run's seed keys the data order and the dropout masks: a resumed run keeps it.
    seed = meta.seed;
    const nlohmann::json run = meta.state.is_object() ? meta.state.value("run", nlohmann::json::object())
                                                      : nlohmann::json::object();
    check_resume_matches(o, resumed_from_, meta.seed, run, data_->options().data);
    const int saved_world = run.value("world_size", 1);
    CONVNET_CHECK(saved_world == world.size(), "--resume: ", resumed_from_, " was written by a run of ",
                  saved_world, " process(es); resume it with as many (mpirun -np ", saved_world, "), not ",
                  world.size(), ": each rank's share of every batch would change");
  }

  // The net first: a GPU that is not there is named by it before a pipeline asks for one.
  // Under MPI, a bare "cuda" is this rank's own GPU: its rank among the ranks of its host.
  const bool own_gpu = world.distributed() && (o.device == "cuda" || o.device == "gpu");
  const std::vector<Device> devices =
      parse_devices(own_gpu ? "cuda:" + std::to_string(world.local_rank()) : o.device);
  for (const Device& d : devices)
    CONVNET_CHECK(!world.distributed() || d.is_cpu() || nccl_compiled(), "data parallelism across processes "
                  "on ", d.str(), " sums gradients with NCCL, which this build of convnet does not have "
                  "(it needs MPI and NCCL when it is built)");
  net_ = std::make_unique<Net>(model, devices, seed);
  net_->set_math_mode(o.math);
  net_->set_device_threads(o.device_threads);
  net_->set_cuda_graph(o.cuda_graph);
  if (o.lr)
    for (Param* p : net_->params()) p->lr = p->base_lr = *o.lr;

  // Batches for a GPU input are filled in page-locked memory and go up by DMA, no staging copy.
  bool pinned = false;
  for (Layer* l : net_->layers())
    if (l->is_input() && net_->device_of(l->name()).is_cuda()) pinned = true;
  // The model's input against the data, now rather than at the first batch.
  const std::string input = input_and_labels(*net_).first;
  const Shape want = net_->output_shape(input);
  const int side = data_->input_size();
  CONVNET_CHECK(want[0] == data_->channels() && want[1] == side && want[2] == side, "the model's input '", input,
                "' takes ", want[0], "x", want[1], "x", want[2], " images, the data gives ", data_->channels(), "x",
                side, "x", side, data_->options().crop ? "" : " (--crop N takes N x N crops)");
  const Dataset& d = data_->dataset();
  train_ = std::make_unique<Pipeline>(
      d.train, data_->pipeline_options(true, o.batch, seed, o.workers, pinned, world.rank(), world.size()),
      data_->stats());
  test_ = std::make_unique<Pipeline>(d.test, data_->pipeline_options(false, o.batch, seed, o.workers, pinned),
                                     data_->stats());

  t.run_info = data_->info();
  t.run_info["batch"] = o.batch;
  t.run_info["seed"] = seed;
  t.run_info["world_size"] = world.size();
  if (!t.save_dir.empty() && world.rank() == 0) fs::create_directories(t.save_dir);
  if (!t.log_path.empty() && world.rank() == 0 && fs::path(t.log_path).has_parent_path())
    fs::create_directories(fs::path(t.log_path).parent_path());
  trainer_ = std::make_unique<Trainer>(*net_, *train_, test_.get(), std::move(t));
  if (!resumed_from_.empty())
    for (std::string& note : trainer_->resume(resumed_from_)) resume_notes_.push_back(std::move(note));
}

Job::~Job() = default;

std::string Job::description() const {
  const Dataset& d = data_->dataset();
  std::ostringstream out;
  out << net_->parameter_count() << " parameters on " << d.description << ": " << d.train->size()
      << " training and " << d.test->size() << " test images, batch " << options_.batch << ", "
      << options_.trainer.epochs << " epochs, device " << options_.device << ", solver "
      << trainer_->options().solver.text() << ", " << cpu::num_threads() << " CPU threads";
  const auto& lanes = net_->lanes();
  if (lanes.size() > 1) {
    out << "; " << lanes.size() << " lanes side by side:";
    for (size_t i = 0; i < lanes.size(); ++i) out << (i ? ", " : " ") << lanes[i].name();
    out << " (" << net_->threads_per_cpu_device() << " thread(s) per CPU device)";
  }
  for (const auto& [a, b] : net_->gpus_without_peer_access())
    out << "; " << a.str() << " and " << b.str() << " have no peer access: copies between them go through host memory";
  const World& world = World::get();
  if (world.distributed())
    out << "; " << world.size() << " processes, " << options_.batch / world.size() << " images each";
  return out.str();
}

Metrics Job::multiview_test(const std::function<void(int64_t, int64_t)>& progress) {
  CONVNET_CHECK(data_->options().crop > 0, "the 10-view test needs a crop (the views are crops)");
  return evaluate_multiview(*net_, *data_->dataset().test, data_->stats(), data_->augment(false),
                            130, progress);
}

}  // namespace convnet

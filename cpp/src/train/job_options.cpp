// The training job's options: one table (names, aliases, defaults, help) and its parser.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "convnet/job.h"
#include "convnet/solver.h"

namespace convnet {

namespace {

std::string number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

std::vector<JobOption> make_table() {
  const DataOptions data;
  const PipelineOptions pipe;
  const TrainerOptions trainer;
  const SolverOptions solver, adamw;
  std::string solvers;
  for (const std::string& s : solver_names()) solvers += (solvers.empty() ? "" : ", ") + s;
  auto option = [](std::string name, std::string value, std::string fallback, std::string help) {
    JobOption o;
    o.name = std::move(name);
    o.value = std::move(value);
    o.fallback = std::move(fallback);
    o.help = std::move(help);
    return o;
  };
  auto flag = [&](std::string name, std::string help) { return option(std::move(name), "", "", std::move(help)); };
  auto alias = [](JobOption o, std::string a) {
    o.aliases.push_back(std::move(a));
    return o;
  };
  std::vector<JobOption> t = {
      alias(option("data", "SPEC", data.data,
                   "data set: fashion-mnist (Debian's dataset-fashion-mnist), a folder of IDX files, a folder "
                   "with train/ and val/ class folders of JPEG/PNG images, or "
                   "generated[count=512;classes=4;channels=1;size=16]"),
            "data-path"),
      option("image-size", "N", std::to_string(data.image_size), "decoded size of folder images"),
      option("crop", "N", std::to_string(data.crop), "random crops of this size in training, the centre crop in test (0: none)"),
      flag("mirror", "random horizontal reflections in training"),
      option("scale-jitter", "MIN,MAX", "",
             "VGG's scale jittering: each training image rescaled so its shorter side is S, drawn from "
             "[MIN, MAX] per image per epoch (pixels of the image as the data set holds it), before the "
             "random --crop (at most MIN); empty: off"),
      option("test-scale", "Q", std::to_string(data.test_scale),
             "VGG's single-scale test: test images rescaled so the shorter side is Q, then the centre "
             "--crop (0: as they are)"),
      option("pca-std", "X", number(data.pca_std),
             "AlexNet's PCA colour noise: alpha_i ~ N(0, X) times the standard deviation along each RGB principal "
             "component (the paper: 0.1; RGB only)"),
      flag("pca-rescale", "with --pca-std, also multiply training inputs by 1/(1 + X), as cuda-convnet2 (it makes "
                          "training inputs smaller than test inputs)"),
      option("mean", "KIND", data.mean, "subtract the training set's mean pixel (scalar), mean image (image), or none"),
      option("scale", "X", data.scale,
             "multiply pixels by this after the mean: a number, or std for 1 / the training pixels' standard "
             "deviation (unit-variance input; the paper's gaussian init wants 1, raw 0-255 values)"),
      option("epochs", "N", std::to_string(trainer.epochs), "epochs to train"),
      alias(option("batch", "N", std::to_string(pipe.batch), "minibatch size"), "mini"),
      option("lr", "X", "", "base learning rate of every layer (default: the model's epsW/epsB)"),
      option("schedule", "S", "constant",
             "learning-rate schedule: constant, step[every=E;factor=F], exp[tgtFactor=T], dexp[tgtFactor=T;numSteps=N], "
             "linear[tgtFactor=T], plateau[factor=0.1;patience=2;threshold=0;maxDrops=3]; any takes warmup=E"),
      option("group", "PREFIX=S", "",
             "a schedule for the layers whose names start with PREFIX (repeatable, or comma-separated; first match "
             "wins, --schedule covers the rest)"),
      option("solver", "NAME", solver.name,
             "the update rule: " + solvers + " (sgd: the paper's momentum SGD); every solver takes each layer's "
             "rates, momentum and weight decay (epsW, momW, wc) and the schedules; adamw's decay is decoupled"),
      option("adam-betas", "B1,B2", "", "adamw's moment decay rates (default " + number(adamw.beta1) + "," +
                                            number(adamw.beta2) + ")"),
      option("adam-eps", "X", "", "adamw's epsilon (default " + number(adamw.eps) + ")"),
      option("max-grad-norm", "X", number(trainer.max_grad_norm), "stop when the gradient norm exceeds this (0: only non-finite stops)"),
      option("seed", "N", std::to_string(pipe.seed), "initialisation, data order and dropout"),
      alias(option("test-every", "N", std::to_string(trainer.test_every), "test every N batches too (0: at each epoch's end only)"),
            "test-freq"),
      option("test-batches", "N", std::to_string(trainer.test_batches), "batches per test (0: the whole test set)"),
      flag("multiview-test", "after training, AlexNet's 10-view test (4 corner and the centre crops and their "
                             "reflections, softmax outputs averaged); needs --crop"),
      alias(option("save-dir", "DIR", "", "folder for checkpoints and log.jsonl (empty: none)"), "save-path"),
      alias(option("save-every", "N", std::to_string(trainer.save_every), "checkpoint every N batches too (0: at each epoch's end only)"),
            "save-freq"),
      option("keep", "N", std::to_string(trainer.keep), "checkpoints kept in --save-dir (0: all)"),
      option("log", "FILE", "", "JSON-lines log of every batch, test and epoch (default: SAVE_DIR/log.jsonl)"),
      option("resume", "PATH", "",
             "continue a run: from a checkpoint file, the newest checkpoint of a folder, or, given no PATH (or "
             "auto), the newest in --save-dir when there is one"),
      flag("overwrite", "start again in a --save-dir that holds an earlier run (its checkpoints and log are deleted)"),
      flag("resume-other-data", "with --resume: continue on a --data set other than the checkpoint's run's "
                                "(fine-tuning); without it a resume refuses another data set"),
      option("device", "DEV", "cpu", "cpu, cuda:0, or one device per logical device: cuda:0,cuda:1"),
      option("math", "MODE", "fp32", "GPU GEMM precision: fp32 or tf32"),
      flag("cuda-graph", "replay each step's forward and backward passes as one CUDA graph (one GPU only)"),
      option("workers", "N", std::to_string(pipe.workers), "data loading threads"),
      option("threads", "N", "0", "CPU compute threads (0: all cores)"),
      option("device-threads", "N", "0",
             "threads of each CPU device when several run side by side (--device cpu:0,cpu:1; 0: --threads "
             "split evenly)"),
      option("trace", "FILE", "",
             "write a timeline of " + std::to_string(TrainerOptions::kTraceSteps) +
                 " training steps (every layer on its device, the step's phases) as Chrome trace JSON, for Perfetto"),
      option("print-freq", "N", "50", "progress line every N batches"),
      flag("quiet", "no per-batch progress (the test and epoch lines only)"),
  };
  for (JobOption& o : t) {
    if (o.name == "group") o.repeatable = true;
    if (o.name == "resume") o.bare = "auto";
  }
  return t;
}

using Values = std::map<std::string, std::string>;

const JobOption& find_option(const std::string& name) {
  for (const JobOption& o : job_options()) {
    if (o.name == name) return o;
    for (const std::string& a : o.aliases)
      if (a == name) return o;
  }
  throw ValueError("unknown option --" + name + " (see --help)");
}

int whole(const Values& v, const std::string& key, int min = 0) {
  const std::string& text = v.at(key);
  char* end = nullptr;
  const long x = std::strtol(text.c_str(), &end, 10);
  CONVNET_CHECK(!text.empty() && *end == '\0' && x >= min && x <= 2147483647L, "--", key, " '", text,
                "' is not a whole number >= ", min);
  return int(x);
}

double real(const Values& v, const std::string& key) {
  const std::string& text = v.at(key);
  char* end = nullptr;
  const double x = std::strtod(text.c_str(), &end);
  CONVNET_CHECK(!text.empty() && *end == '\0' && std::isfinite(x), "--", key, " '", text, "' is not a number");
  return x;
}

bool flag_value(const std::string& name, const std::string& text) {
  if (text == "1" || text == "true") return true;
  if (text == "0" || text == "false" || text.empty()) return false;
  throw ValueError("--" + name + " is a flag: it takes no value (got '" + text + "')");
}

SolverOptions solver_of(const Values& v) {
  SolverOptions o;
  o.name = v.at("solver");
  const std::string& betas = v.at("adam-betas");
  CONVNET_CHECK((betas.empty() && v.at("adam-eps").empty()) || o.name == "adamw",
                "--adam-betas and --adam-eps apply to --solver adamw only, not '", o.name, "'");
  if (!betas.empty()) {
    const auto comma = betas.find(',');
    const std::string b1 = betas.substr(0, comma), b2 = comma == std::string::npos ? "" : betas.substr(comma + 1);
    char *end1 = nullptr, *end2 = nullptr;
    o.beta1 = std::strtod(b1.c_str(), &end1);
    o.beta2 = std::strtod(b2.c_str(), &end2);
    CONVNET_CHECK(!b1.empty() && !b2.empty() && *end1 == '\0' && *end2 == '\0', "--adam-betas '", betas,
                  "' is not two numbers B1,B2 (e.g. 0.9,0.999)");
  }
  if (!v.at("adam-eps").empty()) o.eps = real(v, "adam-eps");
  o.validate();
  return o;
}

// --group items (PREFIX=SCHEDULE, comma-separated or repeated) and then "*" for --schedule.
std::vector<std::pair<std::string, Schedule>> schedules_of(const Values& v) {
  std::vector<std::pair<std::string, Schedule>> out;
  const std::string& groups = v.at("group");
  size_t start = 0;
  while (start < groups.size()) {
    size_t end = groups.find(',', start);
    if (end == std::string::npos) end = groups.size();
    const std::string item = groups.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    const auto eq = item.find('=');
    CONVNET_CHECK(eq != std::string::npos && eq > 0, "--group '", item, "' is not PREFIX=SCHEDULE");
    out.emplace_back(item.substr(0, eq), Schedule::parse(item.substr(eq + 1)));
  }
  out.emplace_back("*", Schedule::parse(v.at("schedule")));
  return out;
}

}  // namespace

const std::vector<JobOption>& job_options() {
  static const std::vector<JobOption> table = make_table();
  return table;
}

JobOptions JobOptions::parse(const std::vector<std::pair<std::string, std::string>>& args) {
  Values v;
  for (const JobOption& o : job_options()) v[o.name] = o.fallback;
  std::map<std::string, bool> given;
  for (const auto& [name, value] : args) {
    const JobOption& o = find_option(name);
    if (o.repeatable && given[o.name] && !value.empty())
      v[o.name] += "," + value;
    else
      v[o.name] = value.empty() && !o.value.empty() && !o.bare.empty() ? o.bare : value;
    given[o.name] = true;
  }
  auto on = [&](const std::string& name) { return flag_value(name, v.at(name)); };

  JobOptions j;
  DataOptions& d = j.data;
  d.data = v.at("data");
  CONVNET_CHECK(!d.data.empty(), "--data is empty (see --help for the data sets)");
  d.image_size = whole(v, "image-size", 1);
  d.crop = whole(v, "crop");
  d.mirror = on("mirror");
  if (const std::string& jitter = v.at("scale-jitter"); !jitter.empty()) {
    const size_t comma = jitter.find(',');
    char* end = nullptr;
    d.jitter_min = comma == std::string::npos ? -1 : int(std::strtol(jitter.c_str(), &end, 10));
    const bool first_ok = comma != std::string::npos && end == jitter.c_str() + comma;
    d.jitter_max = first_ok ? int(std::strtol(jitter.c_str() + comma + 1, &end, 10)) : -1;
    CONVNET_CHECK(first_ok && *end == '\0' && d.jitter_min > 0 && d.jitter_max >= d.jitter_min,
                  "--scale-jitter '", jitter, "' must be MIN,MAX with 0 < MIN <= MAX (e.g. 256,512)");
    CONVNET_CHECK(d.crop > 0 && d.crop <= d.jitter_min, "--scale-jitter ", jitter,
                  " needs a --crop of at most ", d.jitter_min, " (the crop is cut from the rescaled image)");
  }
  d.test_scale = whole(v, "test-scale");
  CONVNET_CHECK(d.test_scale == 0 || (d.crop > 0 && d.crop <= d.test_scale), "--test-scale ", d.test_scale,
                " needs a --crop of at most ", d.test_scale);
  d.pca_std = float(real(v, "pca-std"));
  CONVNET_CHECK(d.pca_std >= 0, "--pca-std ", d.pca_std, " must be >= 0");
  d.pca_rescale = on("pca-rescale");
  CONVNET_CHECK(!d.pca_rescale || d.pca_std > 0, "--pca-rescale goes with --pca-std > 0");
  d.mean = v.at("mean");
  CONVNET_CHECK(d.mean == "scalar" || d.mean == "image" || d.mean == "none", "--mean '", d.mean,
                "' must be scalar, image or none");
  d.scale = v.at("scale");

  j.batch = whole(v, "batch", 1);
  j.seed = uint64_t(whole(v, "seed"));
  j.seed_given = given.count("seed") > 0;
  j.workers = whole(v, "workers", 1);
  j.threads = whole(v, "threads");
  j.device_threads = whole(v, "device-threads");
  j.device = v.at("device");
  j.math = parse_math_mode(v.at("math"));
  j.cuda_graph = on("cuda-graph");
  if (!v.at("lr").empty()) {
    j.lr = float(real(v, "lr"));
    CONVNET_CHECK(*j.lr >= 0, "--lr ", *j.lr, " must be >= 0");
  }
  j.resume = v.at("resume");
  j.overwrite = on("overwrite");
  j.resume_other_data = on("resume-other-data");
  CONVNET_CHECK(!j.resume_other_data || !j.resume.empty(), "--resume-other-data goes with --resume");
  CONVNET_CHECK(!(j.overwrite && !j.resume.empty()), "--overwrite and --resume contradict each other");
  j.multiview_test = on("multiview-test");
  CONVNET_CHECK(!j.multiview_test || d.crop > 0, "--multiview-test needs --crop (the views are crops)");
  j.print_every = whole(v, "print-freq", 1);
  j.quiet = on("quiet");

  TrainerOptions& t = j.trainer;
  t.epochs = whole(v, "epochs");
  t.test_every = whole(v, "test-every");
  t.test_batches = whole(v, "test-batches");
  t.schedules = schedules_of(v);
  t.save_dir = v.at("save-dir");
  t.save_every = whole(v, "save-every");
  t.keep = whole(v, "keep");
  t.log_path = v.at("log").empty() && !t.save_dir.empty() ? t.save_dir + "/log.jsonl" : v.at("log");
  t.max_grad_norm = real(v, "max-grad-norm");
  t.trace_path = v.at("trace");
  CONVNET_CHECK(t.max_grad_norm >= 0, "--max-grad-norm ", t.max_grad_norm, " must be >= 0");
  t.solver = solver_of(v);
  CONVNET_CHECK(j.resume != "auto" || !t.save_dir.empty(), "--resume without a PATH needs --save-dir");
  return j;
}

}  // namespace convnet

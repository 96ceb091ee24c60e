// convnet-train: trains a model file on a data set with the engine's trainer, without Python.
// Options in the spirit of cuda-convnet2's convnet.py (--layer-def, --layer-params, --data-path,
// --mini, --test-freq, --save-path); run with --help for all of them.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "convnet/checkpoint.h"
#include "convnet/dataset.h"
#include "convnet/trainer.h"

using namespace convnet;

namespace {

struct Option {
  const char* name;
  const char* value;  // placeholder shown in --help; nullptr for a flag
  const char* fallback;
  const char* help;
};

const std::vector<Option> kOptions = {
    {"layer-def", "FILE", "", "model definition (JSON: {\"layers\": [...]} or a list of layers); required"},
    {"layer-params", "FILE", "", "JSON {layer: {option: value}} merged into the layer definitions "
                                 "(learning rates epsW/epsB, momW/momB, wc, init...), as cuda-convnet2's layer-params file"},
    {"data-path", "SPEC", "fashion-mnist", "data set: fashion-mnist, a folder of IDX files, a folder with train/ and "
                                            "val/ image folders, or generated[count=512;classes=4;channels=1;size=16]"},
    {"epochs", "N", "10", "epochs to train"},
    {"mini", "N", "128", "minibatch size"},
    {"test-freq", "N", "0", "test every N batches too (0: at each epoch's end only)"},
    {"test-batches", "N", "0", "batches per test (0: the whole test set)"},
    {"multiview-test", nullptr, "", "after training, AlexNet's 10-view test (4 corner and the centre crops and "
                                    "their reflections, softmax outputs averaged); needs --crop"},
    {"save-path", "DIR", "", "folder for checkpoints and log.jsonl (empty: none)"},
    {"save-freq", "N", "0", "checkpoint every N batches too (0: at each epoch's end only)"},
    {"keep", "N", "3", "checkpoints kept in --save-path (0: all)"},
    {"resume", "PATH", "", "continue from a checkpoint file, or from the newest checkpoint of a folder"},
    {"device", "DEV", "cpu", "cpu, cuda:0, or one device per logical device: cuda:0,cuda:1"},
    {"math", "MODE", "fp32", "GPU GEMM precision: fp32 or tf32"},
    {"cuda-graph", nullptr, "", "replay each step's forward and backward passes as one CUDA graph (one GPU only)"},
    {"schedule", "S", "constant", "learning-rate schedule: constant, step[every=E;factor=F], exp[tgtFactor=T], "
                                  "dexp[tgtFactor=T;numSteps=N], linear[tgtFactor=T], "
                                  "plateau[factor=0.1;patience=2;threshold=0;maxDrops=3]; any takes warmup=E"},
    {"group", "PREFIX=S", "", "a schedule for layers whose names start with PREFIX (comma-separated list)"},
    {"seed", "N", "1", "initialisation, data order and dropout"},
    {"image-size", "N", "256", "decoded size of folder images"},
    {"crop", "N", "0", "random crops of this size in training, centre crop in test (0: none)"},
    {"mirror", nullptr, "", "random horizontal reflections in training"},
    {"pca-std", "X", "0", "AlexNet's PCA colour noise: alpha_i ~ N(0, X) times the standard deviation along "
                          "each RGB principal component (the paper: 0.1)"},
    {"pca-rescale", nullptr, "", "with --pca-std, also multiply training inputs by 1/(1 + X), as cuda-convnet2"},
    {"mean", "KIND", "scalar", "subtract the training set's mean pixel (scalar), mean image (image), or none"},
    {"scale", "X", "std", "multiply pixels by this after the mean: a number, or std for 1 / the training "
                          "pixels' standard deviation (unit-variance input; the paper's gaussian init wants 1)"},
    {"workers", "N", "2", "data loading threads"},
    {"threads", "N", "0", "CPU compute threads (0: all cores)"},
    {"solver", "NAME", "", "the update rule: sgd (the paper's momentum SGD; the default), nesterov or adamw; every "
                           "solver takes each layer's epsW/momW/wc and the schedules (adamw's decay is decoupled)"},
    {"adam-betas", "B1,B2", "", "adamw's moment decay rates (default 0.9,0.999)"},
    {"adam-eps", "X", "", "adamw's epsilon (default 1e-8)"},
    {"max-grad-norm", "X", "0", "stop when the gradient norm exceeds this (0: only non-finite stops)"},
    {"print-freq", "N", "50", "progress line every N batches"},
    {"help", nullptr, "", "this text"},
};

void usage(std::ostream& out) {
  out << "usage: convnet-train --layer-def MODEL.json [options]\n\n"
         "Trains a model on a data set with momentum SGD or --solver (the engine's trainer, no Python), printing\n"
         "progress, testing each epoch, and writing checkpoints that `convnet test` can read.\n\n";
  for (const Option& o : kOptions) {
    std::string left = std::string("  --") + o.name + (o.value ? std::string(" ") + o.value : "");
    out << left << std::string(left.size() < 24 ? 24 - left.size() : 1, ' ') << o.help;
    if (o.value && *o.fallback) out << " (default " << o.fallback << ")";
    out << "\n";
  }
}

// --name value or --name=value; flags take no value. Unknown options are errors.
std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (const Option& o : kOptions)
    if (o.value) args[o.name] = o.fallback;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    CONVNET_CHECK(a.rfind("--", 0) == 0, "unexpected argument '", a, "' (options start with --; see --help)");
    a = a.substr(2);
    std::string value;
    const auto eq = a.find('=');
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    const Option* opt = nullptr;
    for (const Option& o : kOptions)
      if (a == o.name) opt = &o;
    CONVNET_CHECK(opt, "unknown option --", a, " (see --help)");
    if (!opt->value) {
      args[a] = "1";
      continue;
    }
    if (eq == std::string::npos) {
      CONVNET_CHECK(i + 1 < argc, "option --", a, " needs a value (", opt->value, ")");
      value = argv[++i];
    }
    args[a] = value;
  }
  return args;
}

int to_int(const std::map<std::string, std::string>& args, const std::string& key) {
  const std::string& v = args.at(key);
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  CONVNET_CHECK(!v.empty() && *end == '\0' && x >= 0, "--", key, " '", v, "' is not a whole number >= 0");
  return int(x);
}

double to_double(const std::map<std::string, std::string>& args, const std::string& key) {
  const std::string& v = args.at(key);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  CONVNET_CHECK(!v.empty() && *end == '\0', "--", key, " '", v, "' is not a number");
  return x;
}

// --solver, --adam-betas, --adam-eps; empty values take SolverOptions' defaults.
SolverOptions parse_solver(const std::map<std::string, std::string>& args) {
  SolverOptions o;
  if (!args.at("solver").empty()) o.name = args.at("solver");
  const std::string& betas = args.at("adam-betas");
  const bool adam_options = !betas.empty() || !args.at("adam-eps").empty();
  CONVNET_CHECK(!adam_options || o.name == "adamw", "--adam-betas and --adam-eps apply to --solver adamw only, not '",
                o.name, "'");
  if (!betas.empty()) {
    const auto comma = betas.find(',');
    const std::string b1 = betas.substr(0, comma), b2 = comma == std::string::npos ? "" : betas.substr(comma + 1);
    char *end1 = nullptr, *end2 = nullptr;
    o.beta1 = std::strtod(b1.c_str(), &end1);
    o.beta2 = std::strtod(b2.c_str(), &end2);
    CONVNET_CHECK(!b1.empty() && !b2.empty() && *end1 == '\0' && *end2 == '\0', "--adam-betas '", betas,
                  "' is not two numbers B1,B2 (e.g. 0.9,0.999)");
  }
  if (!args.at("adam-eps").empty()) o.eps = to_double(args, "adam-eps");
  o.validate();
  return o;
}

nlohmann::json read_json(const std::string& path, const char* what) {
  std::ifstream in(path);
  CONVNET_CHECK(bool(in), what, " '", path, "' cannot be opened");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw ValueError(std::string(what) + " '" + path + "' is not valid JSON: " + e.what());
  }
}

// The model file with --layer-params merged in; a params entry for a missing layer is an error.
ModelSpec load_model(const std::string& def_path, const std::string& params_path) {
  nlohmann::json def = read_json(def_path, "--layer-def");
  nlohmann::json& layers = def.is_object() && def.contains("layers") ? def["layers"] : def;
  CONVNET_CHECK(layers.is_array(), "--layer-def '", def_path, "' must hold a list of layers");
  if (!params_path.empty()) {
    const nlohmann::json params = read_json(params_path, "--layer-params");
    CONVNET_CHECK(params.is_object(), "--layer-params '", params_path, "' must be {layer: {option: value}}");
    for (auto& [name, options] : params.items()) {
      bool found = false;
      for (auto& layer : layers)
        if (layer.value("name", "") == name) {
          CONVNET_CHECK(options.is_object(), "--layer-params: the entry of '", name, "' is not an object");
          layer.update(options);
          found = true;
        }
      CONVNET_CHECK(found, "--layer-params '", params_path, "' sets layer '", name,
                    "', which --layer-def '", def_path, "' does not define");
    }
  }
  return ModelSpec::from_json(def.dump());  // the whole file: unknown top-level keys are errors
}

std::vector<Device> parse_devices(const std::string& text, const ModelSpec& spec) {
  std::vector<Device> devices;
  std::stringstream in(text);
  for (std::string d; std::getline(in, d, ',');) devices.push_back(Device::parse(d));
  int logical = 1;
  for (const LayerSpec& l : spec.layers) logical = std::max(logical, l.device + 1);
  if (devices.size() == 1) devices.assign(size_t(logical), devices[0]);
  return devices;
}

std::vector<std::pair<std::string, Schedule>> parse_schedules(const std::string& groups, const std::string& rest) {
  std::vector<std::pair<std::string, Schedule>> out;
  std::stringstream in(groups);
  for (std::string item; std::getline(in, item, ',');) {
    const auto eq = item.find('=');
    CONVNET_CHECK(eq != std::string::npos, "--group '", item, "' is not PREFIX=SCHEDULE");
    out.emplace_back(item.substr(0, eq), Schedule::parse(item.substr(eq + 1)));
  }
  out.emplace_back("*", Schedule::parse(rest));
  return out;
}

int run(int argc, char** argv) {
  const auto args = parse_args(argc, argv);
  if (args.count("help")) {
    usage(std::cout);
    return 0;
  }
  CONVNET_CHECK(!args.at("layer-def").empty(), "--layer-def is required (see --help)");
  if (const int threads = to_int(args, "threads")) omp_set_num_threads(threads);

  const ModelSpec spec = load_model(args.at("layer-def"), args.at("layer-params"));
  const Dataset data = open_dataset(args.at("data-path"), to_int(args, "image-size"));
  const std::string mean = args.at("mean");
  CONVNET_CHECK(mean == "scalar" || mean == "image" || mean == "none", "--mean must be scalar, image or none");
  const double pca_std = to_double(args, "pca-std");
  DataStats stats;
  if (mean != "none" || pca_std > 0 || args.at("scale") == "std") {
    std::cout << "data statistics over up to 10000 training images..." << std::endl;
    stats = compute_stats(*data.train, 10000);
  }
  PipelineOptions po;
  po.batch = to_int(args, "mini");
  po.seed = uint64_t(to_int(args, "seed"));
  std::string resume = args.at("resume");
  if (!resume.empty()) {
    if (std::filesystem::is_directory(resume)) {
      const std::string dir = resume;
      resume = latest_checkpoint(dir);
      CONVNET_CHECK(!resume.empty(), "--resume: no checkpoint in '", dir, "'");
    }
    // The run's seed keys the data order and the dropout masks: a resumed run keeps it.
    po.seed = read_checkpoint_meta(resume).seed;
  }
  po.workers = std::max(1, to_int(args, "workers"));
  po.reuse_batch_memory = true;  // the trainer copies each batch into the net before the next
  const std::vector<Device> devices = parse_devices(args.at("device"), spec);
  // The net first: a GPU that is not there is named by it before the pipeline asks for one.
  Net net(spec, devices, po.seed);
  CONVNET_CHECK(args.at("math") == "fp32" || args.at("math") == "tf32", "--math must be fp32 or tf32");
  net.set_math_mode(args.at("math") == "tf32" ? MathMode::Tf32 : MathMode::Fp32);
  net.set_cuda_graph(args.count("cuda-graph") > 0);
  // Batches for a GPU go up by DMA from page-locked memory, with no staging copy.
  po.pinned_memory = std::any_of(devices.begin(), devices.end(),
                                 [](const Device& d) { return d.is_cuda(); });
  po.augment.crop = to_int(args, "crop");
  const bool multiview = args.count("multiview-test") > 0;
  CONVNET_CHECK(!multiview || po.augment.crop > 0, "--multiview-test needs --crop (the views are crops)");
  po.augment.mirror = args.count("mirror") > 0;
  po.augment.pca_std = float(pca_std);
  po.augment.pca_rescale = args.count("pca-rescale") > 0;
  po.augment.subtract_mean_image = mean == "image";
  po.augment.mean_value = mean == "scalar" ? float(std::accumulate(stats.mean.begin(), stats.mean.end(), 0.0) /
                                                   double(std::max<size_t>(stats.mean.size(), 1)))
                                           : 0.f;
  po.augment.scale = parse_scale(args.at("scale"), stats);
  PipelineOptions test_po = po;
  test_po.train = false;
  test_po.shuffle = false;
  Pipeline train(data.train, po, stats), test(data.test, test_po, stats);

  TrainerOptions o;
  o.epochs = to_int(args, "epochs");
  o.test_every = to_int(args, "test-freq");
  o.test_batches = to_int(args, "test-batches");
  o.schedules = parse_schedules(args.at("group"), args.at("schedule"));
  o.save_dir = args.at("save-path");
  o.save_every = to_int(args, "save-freq");
  o.keep = to_int(args, "keep");
  o.max_grad_norm = to_double(args, "max-grad-norm");
  o.solver = parse_solver(args);
  if (!o.save_dir.empty()) o.log_path = o.save_dir + "/log.jsonl";
  const int source_size = data.train->height() == data.train->width() ? data.train->height() : 0;
  o.run_info = {{"data", args.at("data-path")}, {"image_size", to_int(args, "image-size")},
                {"source_size", source_size ? nlohmann::json(source_size) : nlohmann::json()},
                {"crop", po.augment.crop}, {"mean", mean}, {"mean_value", po.augment.mean_value},
                {"scale", po.augment.scale}, {"mirror", po.augment.mirror}, {"pca_std", pca_std},
                {"pca_rescale", po.augment.pca_rescale},
                {"class_names", data.train->class_names()}, {"batch", po.batch}, {"seed", po.seed}};
  if (!o.save_dir.empty()) std::filesystem::create_directories(o.save_dir);

  Trainer trainer(net, train, &test, o);
  if (!resume.empty()) {
    for (const std::string& note : trainer.resume(resume)) std::cout << "resume: " << note << "\n";
    std::cout << "resumed from " << resume << " at step " << net.step() << std::endl;
  }
  std::cout << "convnet-train: " << args.at("layer-def") << " (" << net.parameter_count()
            << " parameters) on " << data.description << ": " << data.train->size() << " training, "
            << data.test->size() << " test images, batch " << po.batch << ", " << o.epochs
            << " epochs, device " << args.at("device") << ", solver " << o.solver.text() << std::endl;
  const int print_every = std::max(1, to_int(args, "print-freq"));
  trainer.on_batch = [&](const BatchEvent& e) {
    if (e.batch % print_every == 0 || e.batch == e.batches)
      std::printf("%lld.%lld/%lld  cost %.4f  error %.4f  lr %.3g  |g| %.3g  %.0f img/s\n",
                  (long long)e.epoch, (long long)e.batch, (long long)e.batches, e.train.cost,
                  e.train.top1_error, e.lr, e.grad_norm, e.images_per_s);
    std::fflush(stdout);
    return true;
  };
  trainer.on_test = [](const TestEvent& e) {
    std::printf("test at epoch %.2f: cost %.4f  top-1 error %.4f  top-5 error %.4f%s\n", e.epoch_float,
                e.test.cost, e.test.top1_error, e.test.top5_error, e.lr_dropped ? "  (learning rate lowered)" : "");
    std::fflush(stdout);
  };
  trainer.on_epoch = [](const EpochEvent& e) {
    std::printf("epoch %lld done in %.0f s: train cost %.4f, error %.4f%s%s\n", (long long)e.epoch,
                e.epoch_s, e.train.cost, e.train.top1_error, e.checkpoint.empty() ? "" : "; saved ",
                e.checkpoint.c_str());
    std::fflush(stdout);
    return true;
  };
  const Trainer::Result r = trainer.run();
  std::printf("done: %lld epochs, step %lld, %.0f s; test accuracy %.4f (top-5 %.4f)\n",
              (long long)r.epochs_done, (long long)r.step, r.elapsed_s, 1 - r.test.top1_error,
              1 - r.test.top5_error);
  if (multiview) {
    const Metrics m = evaluate_multiview(net, *data.test, stats, test_po.augment, 130);
    std::printf("10-view test on %lld images: cost %.4f  top-1 error %.4f  top-5 error %.4f  (accuracy %.4f)\n",
                (long long)m.examples, m.cost, m.top1_error, m.top5_error, 1 - m.top1_error);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const DivergenceError& e) {
    std::cerr << "convnet-train: " << e.what() << std::endl;
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "convnet-train: error: " << e.what() << std::endl;
    return 2;
  }
}

// convnet-train: trains a model file on a data set with the engine's trainer, without Python.
// The job's options are the ones `convnet train` takes (convnet/job.h), with cuda-convnet2's names
// (--data-path, --mini, --test-freq, --save-path) as aliases; run with --help for all of them.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "convnet/cuda_convnet_cfg.h"
#include "convnet/job.h"
#include "convnet/world.h"

using namespace convnet;

namespace {

// This command's own options; the rest are the job's.
const std::vector<JobOption>& tool_options() {
  static const std::vector<JobOption> t = [] {
    std::vector<JobOption> o(3);
    o[0].name = "layer-def", o[0].value = "FILE";
    o[0].help = "model definition (JSON: {\"layers\": [...]} or a list of layers; or cuda-convnet2's "
              "layers-*.cfg); required";
    o[1].name = "layer-params", o[1].value = "FILE";
    o[1].help = "JSON {layer: {option: value}} merged into the layer definitions (learning rates epsW/epsB, "
                "momW/momB, wc, init...), as cuda-convnet2's layer-params file; with a layers-*.cfg, its "
                "layer-params-*.cfg (default: the one beside it)";
    o[2].name = "help", o[2].help = "this text";
    return o;
  }();
  return t;
}

void usage(std::ostream& out) {
  out << "usage: convnet-train --layer-def MODEL.json|layers-X.cfg [options]\n\n"
         "Trains a model on a data set (the engine's trainer, no Python), printing progress, testing each\n"
         "epoch, and writing checkpoints that `convnet test` can read. The options are `convnet train`'s;\n"
         "cuda-convnet2's names are taken too.\n\n";
  auto show = [&](const JobOption& o) {
    std::string left = "  --" + o.name;
    for (const std::string& a : o.aliases) left += ", --" + a;
    if (!o.value.empty()) left += " " + o.value;
    out << left << std::string(left.size() < 30 ? 30 - left.size() : 1, ' ') << o.help;
    if (!o.value.empty() && !o.fallback.empty()) out << " (default " << o.fallback << ")";
    out << "\n";
  };
  for (const JobOption& o : tool_options()) show(o);
  for (const JobOption& o : job_options()) show(o);
}

struct Args {
  std::string layer_def, layer_params;
  bool help = false;
  std::vector<std::pair<std::string, std::string>> job;  // for JobOptions::parse
};

// --name value or --name=value; flags take no value; unknown options are errors (JobOptions::parse).
Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    CONVNET_CHECK(a.rfind("--", 0) == 0, "unexpected argument '", a, "' (options start with --; see --help)");
    a = a.substr(2);
    std::string value;
    const auto eq = a.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    if (a == "help") {
      args.help = true;
      continue;
    }
    const JobOption* opt = nullptr;
    for (const auto* table : {&tool_options(), &job_options()})
      for (const JobOption& o : *table) {
        if (o.name == a) opt = &o;
        for (const std::string& alias : o.aliases)
          if (alias == a) opt = &o;
      }
    CONVNET_CHECK(opt, "unknown option --", a, " (see --help)");
    if (opt->value.empty()) {
      CONVNET_CHECK(!inline_value, "--", a, " is a flag: it takes no value");
      value = "1";
    } else if (!inline_value) {
      const bool next_is_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
      CONVNET_CHECK(next_is_value || !opt->bare.empty(), "option --", a, " needs a value (", opt->value, ")");
      value = next_is_value ? argv[++i] : opt->bare;
    }
    if (opt->name == "layer-def")
      args.layer_def = value;
    else if (opt->name == "layer-params")
      args.layer_params = value;
    else
      args.job.emplace_back(a, value);
  }
  return args;
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
// A cuda-convnet2 layers-*.cfg reads with its layer-params-*.cfg (given, or the one beside it) and
// the image size of the data (cuda-convnet2 takes it from its data provider).
ModelSpec load_model(const std::string& def_path, const std::string& params_path, int input_size) {
  if (is_cuda_convnet_cfg(def_path)) {
    const std::string params = params_path.empty() ? cuda_convnet_params_path(def_path) : params_path;
    return read_cuda_convnet_cfg(def_path, params, input_size);
  }
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

void print_progress(Job& job) {
  const int print_every = job.options().print_every;
  const bool quiet = job.options().quiet;
  Trainer& trainer = job.trainer();
  trainer.on_batch = [=](const BatchEvent& e) {
    if (!quiet && (e.batch % print_every == 0 || e.batch == e.batches)) {
      std::printf("%lld.%lld/%lld  cost %.4f  error %.4f  lr %.3g  |g| %.3g  %.0f img/s\n",
                  (long long)e.epoch, (long long)e.batch, (long long)e.batches, e.train.cost,
                  e.train.top1_error, e.lr, e.grad_norm, e.images_per_s);
      std::fflush(stdout);
    }
    return true;
  };
  trainer.on_test = [](const TestEvent& e) {
    const std::string skipped = skipped_note(e.test, "test");
    std::printf("test at epoch %.2f: cost %.4f  top-1 error %.4f  top-5 error %.4f%s%s%s%s\n", e.epoch_float,
                e.test.cost, e.test.top1_error, e.test.top5_error, e.lr_dropped ? "  (learning rate lowered)" : "",
                skipped.empty() ? "" : "  (", skipped.c_str(), skipped.empty() ? "" : ")");
    std::fflush(stdout);
  };
  trainer.on_epoch = [](const EpochEvent& e) {
    const std::string skipped = skipped_note(e.train, "training");
    std::printf("epoch %lld done in %.0f s: train cost %.4f, error %.4f%s%s%s%s%s\n", (long long)e.epoch,
                e.epoch_s, e.train.cost, e.train.top1_error, skipped.empty() ? "" : " (", skipped.c_str(),
                skipped.empty() ? "" : ")", e.checkpoint.empty() ? "" : "; saved ", e.checkpoint.c_str());
    std::fflush(stdout);
    return true;
  };
}

int run(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  if (args.help) {
    usage(std::cout);
    return 0;
  }
  CONVNET_CHECK(!args.layer_def.empty(), "--layer-def is required (see --help)");
  const JobOptions options = JobOptions::parse(args.job);
  auto data = std::make_shared<RunData>(options.data, [](int64_t done, int64_t total) {
    if (done == total && World::get().rank() == 0)
      std::printf("data statistics over %lld training images\n", (long long)total);
  });
  const ModelSpec spec = load_model(args.layer_def, args.layer_params, data->input_size());
  Job job(spec, data, options);
  const World& world = World::get();
  if (world.rank() != 0) {  // rank 0 speaks for the run
    job.run();
    return 0;
  }
  for (const std::string& note : job.resume_notes()) std::cout << "resume: " << note << "\n";
  if (!job.resumed_from().empty())
    std::cout << "resumed from " << job.resumed_from() << " at step " << job.net().step() << std::endl;
  std::cout << "convnet-train: " << args.layer_def << " (" << job.description() << ")" << std::endl;
  print_progress(job);
  const Trainer::Result r = job.run();
  const std::string skipped = skipped_note(r.test, "test");
  std::printf("done: %lld epochs, step %lld, %.0f s; test accuracy %.4f (top-5 %.4f%s%s)%s%s\n",
              (long long)r.epochs_done, (long long)r.step, r.elapsed_s, 1 - r.test.top1_error,
              1 - r.test.top5_error, skipped.empty() ? "" : "; ", skipped.c_str(),
              r.last_checkpoint.empty() ? "" : "; checkpoint ", r.last_checkpoint.c_str());
  if (options.multiview_test) {
    const Metrics m = job.multiview_test();
    const std::string left_out = skipped_note(m, "test");
    std::printf("10-view test on %lld images: cost %.4f  top-1 error %.4f  top-5 error %.4f  (accuracy %.4f%s%s)\n",
                (long long)m.examples, m.cost, m.top1_error, m.top5_error, 1 - m.top1_error,
                left_out.empty() ? "" : "; ", left_out.c_str());
  }
  return 0;
}

}  // namespace

// An error ends every rank of an MPI run at once (so that none waits for this one), saying which.
int fail(int code, const char* kind, const std::exception& e) {
  const World& world = World::get();
  std::cerr << "convnet-train" << (world.distributed() ? " (" + world.where() + ")" : "") << ": " << kind
            << e.what() << std::endl;
  if (world.distributed()) World::get().abort(code);
  return code;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const DivergenceError& e) {
    // Every rank decides a divergence together (the trainer sums the checks): rank 0 says where,
    // with its checkpoint, and all end normally.
    if (World::get().rank() == 0) std::cerr << "convnet-train: " << e.what() << std::endl;
    return 3;
  } catch (const std::exception& e) {
    return fail(2, "error: ", e);
  }
}

// Checkpoints: a Net's parameters and solver state in a safetensors file, with the model, step, seed
// and trainer state as metadata; and a run's folder of them, pruned to the newest few.
#include "convnet/checkpoint.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <tuple>

#include "convnet/error.h"
#include "convnet/safetensors.h"

namespace convnet {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* const kFormat = "1";
const char* const kFormatKey = "convnet.format";
const char* const kModelKey = "convnet.model";
const char* const kStepKey = "convnet.step";
const char* const kSeedKey = "convnet.seed";
const char* const kStateKey = "convnet.state";
const char* const kSolverKey = "convnet.solver";
const char* const kChecksumKey = "convnet.checksum";

// The gradients a layer with an updatePeriod has summed since its last update.
const char* const kAccumulated = "accumulated";

// "<param>.<state>", e.g. "conv1.weights.velocity".
std::string state_tensor_name(const Param& p, const std::string& state) {
  return p.name + "." + state;
}

std::vector<int64_t> shape64(const Shape& s) { return std::vector<int64_t>(s.begin(), s.end()); }

std::string dims_text(const std::vector<int64_t>& shape) {
  if (shape.empty()) return "scalar";
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "x" : "") + std::to_string(shape[i]);
  return out;
}

[[noreturn]] void bad_checkpoint(const std::string& path, const std::string& problem) {
  throw ValueError("checkpoint '" + path + "': " + problem);
}

// ---- metadata ----

const std::string& required_metadata(const SafetensorsReader& file, const std::string& key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) bad_checkpoint(file.path(), "no '" + key + "' metadata");
  return it->second;
}

uint64_t parse_counter(const SafetensorsReader& file, const std::string& key) {
  const std::string& text = required_metadata(file, key);
  const bool digits = !text.empty() && text.size() <= 20 &&
                      text.find_first_not_of("0123456789") == std::string::npos;
  if (digits) {
    try {
      return std::stoull(text);
    } catch (const std::out_of_range&) {
    }
  }
  bad_checkpoint(file.path(), "metadata '" + key + "' is '" + text + "', not a counter");
}

CheckpointMeta meta_of(const SafetensorsReader& file) {
  auto format = file.metadata().find(kFormatKey);
  if (format == file.metadata().end())
    bad_checkpoint(file.path(), "not a convnet checkpoint (no 'convnet.format' metadata)");
  if (format->second != kFormat)
    bad_checkpoint(file.path(),
                   "format '" + format->second + "', but this build reads format " + kFormat);
  CheckpointMeta meta;
  meta.model_json = required_metadata(file, kModelKey);
  meta.step = parse_counter(file, kStepKey);
  meta.seed = parse_counter(file, kSeedKey);
  try {
    meta.state = json::parse(required_metadata(file, kStateKey));
  } catch (const json::parse_error& e) {
    bad_checkpoint(file.path(),
                   std::string("metadata 'convnet.state' is not valid JSON: ") + e.what());
  }
  // Checkpoints from before solvers were chosen have none: they are SGD's (velocity only), and
  // SGD's counter is the net's step.
  auto solver = file.metadata().find(kSolverKey);
  if (solver == file.metadata().end()) {
    meta.solver_step = meta.step;
  } else {
    try {
      json j = json::parse(solver->second);
      if (!j.is_object() || !j.contains("step") || !j["step"].is_number_unsigned())
        throw ValueError("no step counter");
      meta.solver_step = j["step"].get<uint64_t>();
      j.erase("step");
      meta.solver = SolverOptions::from_json(j);
    } catch (const std::exception& e) {
      bad_checkpoint(file.path(), std::string("metadata 'convnet.solver' (") + solver->second +
                                      ") is not a solver: " + e.what());
    }
  }
  return meta;
}

ModelSpec model_of(const SafetensorsReader& file, const CheckpointMeta& meta) {
  try {
    return ModelSpec::from_json(meta.model_json);
  } catch (const ValueError& e) {
    bad_checkpoint(file.path(), std::string("its model definition is invalid: ") + e.what());
  }
}

// ---- comparing models ----

// Options that fine-tuning may change without changing what the parameters mean.
bool is_learning_hyperparameter(const std::string& key) {
  for (const char* prefix : {"eps", "mom", "wc", "init"})
    if (key.rfind(prefix, 0) == 0) return true;
  return false;
}

std::string option_text(const json& options, const std::string& key) {
  auto it = options.find(key);
  return it == options.end() || it->is_null() ? "not set" : it->dump();
}

std::string layer_mismatch(const LayerSpec& saved, const LayerSpec& here) {
  if (saved.type != here.type)
    return "type is " + saved.type + " in the checkpoint, " + here.type + " in this model";
  if (saved.inputs != here.inputs)
    return "inputs are " + json(saved.inputs).dump() + " in the checkpoint, " +
           json(here.inputs).dump() + " in this model";
  const json& a = saved.options.values();
  const json& b = here.options.values();
  std::set<std::string> keys;
  for (const json* options : {&a, &b})
    for (auto it = options->begin(); it != options->end(); ++it) keys.insert(it.key());
  for (const std::string& key : keys) {
    if (is_learning_hyperparameter(key)) continue;
    const std::string was = option_text(a, key), is = option_text(b, key);
    const bool same = was == "not set" || is == "not set" ? was == is : a.at(key) == b.at(key);
    if (!same) return key + " is " + was + " in the checkpoint, " + is + " in this model";
  }
  return "";
}

// ---- tensors ----

// `label` is "" for the value, "<state> " (e.g. "velocity ") for a solver state tensor.
void check_shape(const SafetensorsReader& file, const std::string& tensor, const Param& p,
                 const std::string& label) {
  if (!file.has(tensor))
    bad_checkpoint(file.path(), "parameter '" + p.name + "': its " +
                                    (label.empty() ? "value " : label) +
                                    "is not in the checkpoint");
  const std::vector<int64_t>& saved = file.entry(tensor).shape;
  const std::vector<int64_t> here = shape64(p.value.shape());
  if (saved != here)
    bad_checkpoint(file.path(), "parameter '" + p.name + "': " + label + "shape " +
                                    dims_text(saved) + " in the checkpoint, " + dims_text(here) +
                                    " here");
}

// Every parameter has its value and its solver's state tensors in the file, in its shape, and
// nothing else is there.
void check_tensors(const SafetensorsReader& file, Net& net) {
  std::set<std::string> expected;
  for (Param* p : net.params()) {
    check_shape(file, p->name, *p, "");
    expected.insert(p->name);
    for (const std::string& state : net.solver().state_names()) {
      check_shape(file, state_tensor_name(*p, state), *p, state + " ");
      expected.insert(state_tensor_name(*p, state));
    }
    if (p->accumulated.defined()) {
      check_shape(file, state_tensor_name(*p, kAccumulated), *p, std::string(kAccumulated) + " ");
      expected.insert(state_tensor_name(*p, kAccumulated));
    }
  }
  for (const auto& [name, entry] : file.tensors())
    if (!expected.count(name))
      bad_checkpoint(file.path(), "tensor '" + name + "' belongs to no parameter of this model");
}

// One pass over the data: the checksum against the one the file was written with (files from
// before checksums have none) and every value finite. Reads the file, not the net.
void verify_data(SafetensorsReader& file) {
  const SafetensorsScan scan = file.scan();
  auto written = file.metadata().find(kChecksumKey);
  if (written != file.metadata().end()) {
    const std::string found = TensorHash::hex_of(scan.checksum);
    if (found != written->second)
      bad_checkpoint(file.path(), "corrupt: its tensor bytes hash to " + found +
                                      ", but it was written with checksum " + written->second +
                                      " (changed on disk or in transfer since)");
  }
  if (!scan.nonfinite_tensor.empty())
    bad_checkpoint(file.path(), "tensor '" + scan.nonfinite_tensor + "' holds " +
                                    std::to_string(scan.nonfinite_value) + " at index " +
                                    std::to_string(scan.nonfinite_index) +
                                    ": a net with non-finite values computes nothing");
}

void read_into(SafetensorsReader& file, const std::string& name, Tensor& t) {
  if (t.device().is_cpu()) {
    file.read(name, t.data());
  } else {
    const std::vector<float> host = file.read(name);
    t.copy_from_host(host.data());
  }
}

// A view of a tensor's values in host memory: the tensor itself on the CPU, else a copy kept
// in `copies` (a deque, so earlier copies never move).
SafetensorsSpan host_span(const Tensor& t, std::deque<std::vector<float>>& copies) {
  if (t.device().is_cpu()) return {shape64(t.shape()), t.data()};
  copies.push_back(t.to_vector());
  return {shape64(t.shape()), copies.back().data()};
}

// ---- folders ----

// (epoch, batch) of a file named as checkpoint_name, or false.
bool parse_checkpoint_name(const std::string& filename, int64_t& epoch, int64_t& batch) {
  static const std::regex pattern(R"(ckpt-e(\d{1,18})-b(\d{1,18})\.safetensors)");
  std::smatch m;
  if (!std::regex_match(filename, m, pattern)) return false;
  epoch = std::stoll(m[1].str());
  batch = std::stoll(m[2].str());
  return true;
}

// Deletes the oldest checkpoints of `dir` other than `written` until `keep` remain.
void prune_checkpoints(const std::string& dir, const std::string& written, int keep) {
  if (keep <= 0) return;
  std::vector<std::string> others;
  for (const std::string& path : list_checkpoints(dir))
    if (fs::path(path).filename() != fs::path(written).filename()) others.push_back(path);
  const size_t keep_others = size_t(keep - 1);
  for (size_t i = 0; i + keep_others < others.size(); ++i) {
    std::error_code ec;
    fs::remove(others[i], ec);
    if (ec)
      throw RuntimeError("saved '" + written + "', but cannot delete the old checkpoint '" +
                         others[i] + "': " + ec.message());
  }
}

}  // namespace

// ---- public API ----

void save_checkpoint(Net& net, const std::string& path, const json& trainer_state) {
  std::deque<std::vector<float>> copies;
  std::map<std::string, SafetensorsSpan> tensors;
  for (Param* p : net.params()) {
    tensors[p->name] = host_span(p->value, copies);
    for (const std::string& state : net.solver().state_names())
      tensors[state_tensor_name(*p, state)] = host_span(p->state_tensor(state), copies);
    if (p->accumulated.defined())
      tensors[state_tensor_name(*p, kAccumulated)] = host_span(p->accumulated, copies);
  }
  // The checksum covers the tensors in the order the file holds them (sorted by name, as the
  // map is); a non-finite value is refused here, so no checkpoint ever holds one.
  TensorHash hash;
  for (const auto& [name, t] : tensors) {
    size_t count = 1;
    for (int64_t d : t.shape) count *= size_t(d);
    for (size_t i = 0; i < count; ++i)
      if (!std::isfinite(t.data[i]))
        throw RuntimeError("not saving '" + path + "': tensor '" + name + "' holds " +
                           std::to_string(t.data[i]) + " at index " + std::to_string(i) +
                           " (training diverged?)");
    hash.update(t.data, count);
  }
  json solver = net.solver().options().to_json();
  solver["step"] = net.solver().step();
  const std::map<std::string, std::string> metadata = {
      {kChecksumKey, hash.hex()},
      {kSolverKey, solver.dump()},
      {kFormatKey, kFormat},
      {kModelKey, net.spec().to_json()},
      {kStepKey, std::to_string(net.step())},
      {kSeedKey, std::to_string(net.seed())},
      {kStateKey, trainer_state.dump()},
  };
  write_safetensors(path, tensors, metadata);
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return meta_of(SafetensorsReader(path));
}

CheckpointMeta verify_checkpoint(const std::string& path) {
  SafetensorsReader file(path);
  CheckpointMeta meta = meta_of(file);
  model_of(file, meta);
  verify_data(file);
  return meta;
}

std::string model_mismatch(const ModelSpec& checkpoint, const ModelSpec& model) {
  std::map<std::string, const LayerSpec*> saved;
  for (const LayerSpec& l : checkpoint.layers) saved[l.name] = &l;
  std::set<std::string> here;
  for (const LayerSpec& l : model.layers) {
    here.insert(l.name);
    auto it = saved.find(l.name);
    if (it == saved.end())
      return "layer '" + l.name + "' is in this model but not in the checkpoint";
    const std::string difference = layer_mismatch(*it->second, l);
    if (!difference.empty()) return "layer '" + l.name + "': " + difference;
  }
  for (const LayerSpec& l : checkpoint.layers)
    if (!here.count(l.name))
      return "layer '" + l.name + "' is in the checkpoint but not in this model";
  return "";
}

json load_checkpoint(Net& net, const std::string& path) {
  SafetensorsReader file(path);
  const CheckpointMeta meta = meta_of(file);
  const std::string mismatch = model_mismatch(model_of(file, meta), net.spec());
  if (!mismatch.empty()) bad_checkpoint(path, "made by a different model: " + mismatch);
  if (meta.solver.name != net.solver().name())
    bad_checkpoint(path, "saved by solver '" + meta.solver.name + "', but this net's solver is '" +
                             net.solver().name() + "' (choose solver '" + meta.solver.name +
                             "' to continue it)");
  check_tensors(file, net);
  verify_data(file);
  // Everything is validated: only now does the net change. The solver's hyperparameters stay
  // the net's (as learning rates do); its state and counter are the file's.
  for (Param* p : net.params()) {
    read_into(file, p->name, p->value);
    for (const std::string& state : net.solver().state_names())
      read_into(file, state_tensor_name(*p, state), p->state_tensor(state));
    if (p->accumulated.defined()) read_into(file, state_tensor_name(*p, kAccumulated), p->accumulated);
  }
  net.solver().set_step(meta.solver_step);
  net.set_step(meta.step);
  net.set_seed(meta.seed);
  return meta.state;
}

std::string checkpoint_name(int64_t epoch, int64_t batch) {
  CONVNET_CHECK(epoch >= 0 && batch >= 0, "checkpoint_name: epoch ", epoch, " and batch ", batch,
                " must be >= 0");
  char name[96];
  std::snprintf(name, sizeof name, "ckpt-e%04" PRId64 "-b%06" PRId64 ".safetensors", epoch, batch);
  return name;
}

std::string save_checkpoint_in(Net& net, const std::string& dir, int64_t epoch, int64_t batch,
                               const json& trainer_state, int keep) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeError("cannot create the checkpoint folder '" + dir + "': " + ec.message());
  const std::string path = (fs::path(dir) / checkpoint_name(epoch, batch)).string();
  save_checkpoint(net, path, trainer_state);
  prune_checkpoints(dir, path, keep);
  remove_stale_temporaries(dir);
  return path;
}

std::string newest_intact_checkpoint(const std::string& dir, std::vector<std::string>& notes,
                                     bool set_aside) {
  const std::vector<std::string> all = list_checkpoints(dir);
  std::string reasons;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      verify_checkpoint(*it);
      return *it;
    } catch (const ValueError& e) {
      reasons += std::string("\n  ") + e.what();
      std::string note = "not resuming from '" + *it + "': " + e.what();
      if (set_aside) {
        const std::string aside = *it + ".corrupt";
        std::error_code ec;
        fs::rename(*it, aside, ec);
        note += ec ? " (could not rename it aside: " + ec.message() + ")" : "; renamed to '" + aside + "'";
      }
      notes.push_back(note);
    }
  }
  if (!all.empty()) throw ValueError("no intact checkpoint in '" + dir + "':" + reasons);
  return "";
}

std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  static const std::regex pattern(R"(ckpt-e\d+-b\d+\.safetensors\.tmp\.(\d{1,9}))");
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, pattern)) continue;
    const pid_t pid = pid_t(std::stol(m[1].str()));
    // A save still running (this process's, or another's) is not debris.
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code remove_ec;
    if (fs::remove(e.path(), remove_ec)) removed.push_back(e.path().string());
  }
  return removed;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  std::vector<std::tuple<int64_t, int64_t, std::string>> found;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    int64_t epoch = 0, batch = 0;
    std::error_code type_ec;
    if (e.is_regular_file(type_ec) &&
        parse_checkpoint_name(e.path().filename().string(), epoch, batch))
      found.emplace_back(epoch, batch, e.path().string());
  }
  if (ec) throw RuntimeError("cannot list the checkpoint folder '" + dir + "': " + ec.message());
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [epoch, batch, path] : found) paths.push_back(std::move(path));
  return paths;
}

std::string latest_checkpoint(const std::string& dir) {
  std::vector<std::string> all = list_checkpoints(dir);
  return all.empty() ? "" : all.back();
}

}  // namespace convnet

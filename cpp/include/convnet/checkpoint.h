// Checkpoints: a Net's parameters, its solver's state, step counter and seed, the model definition
// and the trainer's own state, in one safetensors file (convnet/safetensors.h):
//
//   tensors   "<param name>" (e.g. "conv1.weights") and "<param name>.<state>" for each of the
//             solver's state tensors (SGD, Nesterov: "velocity"; AdamW: "m", "v"), float32, in
//             the parameter's own shape
//   metadata  "convnet.format" = "1", "convnet.model" = the model JSON, "convnet.step",
//             "convnet.seed" (decimal), "convnet.state" = the trainer state as JSON,
//             "convnet.solver" = {"name", "beta1", "beta2", "eps", "step"} (JSON; step is the
//             solver's update counter, AdamW's t), "convnet.checksum" = the TensorHash of the
//             data section (16 hex digits; safetensors.h)
//
// No checkpoint holds a NaN or Inf: saving refuses one, loading refuses one, and loading checks
// the checksum (a file changed since it was written, by a bit flip or a bad copy, is refused;
// files from before the checksum load unchecked).
//
// A checkpoint without "convnet.solver" (written before solvers could be chosen) is SGD's, its
// counter the net's step. Loading needs the net's solver to be the file's (a ValueError names
// both); the hyperparameters are the net's, as the learning rates are.
//
// Resuming bit for bit: the dropout masks are keyed by the Net's seed and step, so
// load_checkpoint restores both (Net::set_seed, Net::set_step) along with the tensors; a Net
// built with any seed resumes exactly where the saved one stopped.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "convnet/net.h"

namespace convnet {

// Writes every parameter's value and solver state and the metadata above to `path`, atomically (a
// failed save leaves the previous file at `path` intact). Throws RuntimeError on I/O failure.
void save_checkpoint(Net& net, const std::string& path, const nlohmann::json& trainer_state = {});

// Loads values, solver state and counter, the step counter and the seed into `net` (on whatever devices it
// lives) and returns the trainer state. The checkpoint's model must match `net`'s: layer names,
// types, inputs and options, except the learning hyperparameters (options starting with eps,
// mom, wc, init: fine-tuning may change them) and the device placement. Otherwise, or for a
// malformed file, throws ValueError naming the file and the first mismatch; `net` is then left
// unchanged.
nlohmann::json load_checkpoint(Net& net, const std::string& path);

// The metadata alone, without a net and without reading the tensors.
struct CheckpointMeta {
  std::string model_json;
  uint64_t step = 0, seed = 0;
  nlohmann::json state;
  SolverOptions solver;      // "sgd" for a checkpoint without solver metadata
  uint64_t solver_step = 0;
};
CheckpointMeta read_checkpoint_meta(const std::string& path);

// The metadata after checking the whole file as load_checkpoint does, without a net: the
// header, the model definition, the checksum and that every value is finite. Throws ValueError
// naming the file and the first problem.
CheckpointMeta verify_checkpoint(const std::string& path);

// The first difference between a checkpoint's model and `model` that prevents loading, as
// "layer 'conv2': filters is 64 in the checkpoint, 32 in this model"; "" when they match
// (learning hyperparameters and devices are not compared).
std::string model_mismatch(const ModelSpec& checkpoint, const ModelSpec& model);

// ---- a run's checkpoint folder ----

// "ckpt-e{epoch:04d}-b{batch:06d}.safetensors".
std::string checkpoint_name(int64_t epoch, int64_t batch);

// Saves into `dir` (created if missing) under checkpoint_name(epoch, batch), then deletes the
// oldest checkpoints of the folder so that `keep` remain, the one just written always among them
// (keep <= 0: delete none), and the stale temporary files of killed saves. Returns the path
// written.
std::string save_checkpoint_in(Net& net, const std::string& dir, int64_t epoch, int64_t batch,
                               const nlohmann::json& trainer_state, int keep);

// The checkpoint files of `dir` (regular files named as checkpoint_name), oldest first by
// (epoch, batch); temporary files of interrupted saves are ignored. Empty when `dir` is missing.
std::vector<std::string> list_checkpoints(const std::string& dir);

// The newest checkpoint of `dir`, "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// The newest checkpoint of `dir` that verify_checkpoint accepts ("" when `dir` holds none at
// all). Each newer one that fails gets a line in `notes` saying which and why and, with
// set_aside, is renamed to "<name>.corrupt" (kept for a look, no longer a checkpoint). Throws
// ValueError, with every file's reason, when none is intact.
std::string newest_intact_checkpoint(const std::string& dir, std::vector<std::string>& notes,
                                     bool set_aside = true);

// Deletes the temporary files ("<checkpoint>.tmp.<pid>") that saves of processes no longer
// running left in `dir` when they were killed; returns their paths.
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

}  // namespace convnet

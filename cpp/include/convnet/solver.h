// Solvers: the rule Net::update applies to every parameter, chosen by name.
//
//   sgd       the AlexNet paper's momentum SGD, exactly as it always was (ops.h sgd_update):
//               v <- mom*v - wc*lr*w - lr*grad;   w <- w + v
//   nesterov  Nesterov momentum in PyTorch's form, the velocity kept as SGD keeps it
//             (ops.h nesterov_update):
//               s <- wc*lr*w + lr*grad;   v <- mom*v - s;   w <- w + mom*v - s
//   adamw     AdamW, decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW), t counting
//             updates from 1 (ops.h adamw_update):
//               w <- w - lr*wc*w;   m <- b1*m + (1-b1)*grad;   v <- b2*v + (1-b2)*grad^2
//               w <- w - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
//
// lr, mom and wc are each parameter's own (epsW/epsB, momW/momB, wc/wcB of the model
// definition; lr times the trainer's schedule scale), for every solver; AdamW does not use mom.
// A solver's per-parameter tensors live in Param::state under state_names() and are saved in
// checkpoints as "<param>.<state name>"; its name, hyperparameters and step counter are saved in
// the checkpoint's metadata (convnet/checkpoint.h).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "convnet/layer.h"

namespace convnet {

// What chooses a solver: its name and AdamW's hyperparameters. The defaults here are the only
// ones: the Python API, `convnet train` and `convnet-train` read them from this struct.
struct SolverOptions {
  std::string name = "sgd";
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW only

  // ValueError for an unknown name (listing the known ones), a beta outside [0, 1), or an eps
  // that is not > 0.
  void validate() const;
  // {"name": ..., "beta1": ..., "beta2": ..., "eps": ...}; from_json validates.
  nlohmann::json to_json() const;
  static SolverOptions from_json(const nlohmann::json& j);
  // "sgd", "nesterov", or "adamw[beta1=0.9;beta2=0.999;eps=1e-08]" for logs and messages.
  std::string text() const;
  bool operator==(const SolverOptions& o) const {
    return name == o.name && beta1 == o.beta1 && beta2 == o.beta2 && eps == o.eps;
  }
};

// The solver names, in the order messages list them: sgd, nesterov, adamw.
const std::vector<std::string>& solver_names();

class Solver {
 public:
  // Validates `options` (see SolverOptions::validate).
  static std::unique_ptr<Solver> make(const SolverOptions& options);
  virtual ~Solver() = default;

  const SolverOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  // The per-parameter state tensors, each shaped as the parameter.
  virtual std::vector<std::string> state_names() const = 0;
  // Allocates every state tensor of `p` (zero) on p's device and removes any other.
  void init_state(Param& p) const;
  // One update of `p` at rate `lr`; step() is t, this update counted (begin_step first).
  virtual void update(Param& p, float lr) const = 0;
  // The update counter (AdamW's t): begin_step advances it before the parameters of a step are
  // updated; a checkpoint restores it.
  void begin_step() { ++step_; }
  uint64_t step() const { return step_; }
  void set_step(uint64_t step) { step_ = step; }

 protected:
  explicit Solver(SolverOptions options) : options_(std::move(options)) {}
  SolverOptions options_;
  uint64_t step_ = 0;
};

}  // namespace convnet

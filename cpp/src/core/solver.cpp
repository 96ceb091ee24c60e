// Solvers by name (sgd, nesterov, adamw): their options, state tensors and update calls.
#include "convnet/solver.h"

#include <cmath>
#include <sstream>

#include "convnet/error.h"
#include "convnet/ops.h"

namespace convnet {

const std::vector<std::string>& solver_names() {
  static const std::vector<std::string> names = {"sgd", "nesterov", "adamw"};
  return names;
}

namespace {

std::string known_solvers() {
  std::string out;
  for (const std::string& n : solver_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

class Sgd : public Solver {
 public:
  explicit Sgd(SolverOptions o) : Solver(std::move(o)) {}
  std::vector<std::string> state_names() const override { return {"velocity"}; }
  void update(Param& p, float lr) const override {
    sgd_update(p.value, p.grad, p.state_tensor("velocity"), lr, p.momentum, p.weight_decay);
  }
};

class Nesterov : public Solver {
 public:
  explicit Nesterov(SolverOptions o) : Solver(std::move(o)) {}
  std::vector<std::string> state_names() const override { return {"velocity"}; }
  void update(Param& p, float lr) const override {
    nesterov_update(p.value, p.grad, p.state_tensor("velocity"), lr, p.momentum, p.weight_decay);
  }
};

class AdamW : public Solver {
 public:
  explicit AdamW(SolverOptions o) : Solver(std::move(o)) {}
  std::vector<std::string> state_names() const override { return {"m", "v"}; }
  void update(Param& p, float lr) const override {
    AdamWHyper h;
    h.lr = lr;
    h.weight_decay = p.weight_decay;
    h.beta1 = options_.beta1;
    h.beta2 = options_.beta2;
    h.eps = float(options_.eps);
    h.step = step_;
    adamw_update(p.value, p.grad, p.state_tensor("m"), p.state_tensor("v"), h);
  }
};

}  // namespace

void SolverOptions::validate() const {
  bool known = false;
  for (const std::string& n : solver_names()) known |= n == name;
  if (!known) throw ValueError("unknown solver '" + name + "' (known: " + known_solvers() + ")");
  // Written so that NaN fails too.
  CONVNET_CHECK(beta1 >= 0 && beta1 < 1, "solver ", name, ": beta1 must be in [0, 1), got ", beta1);
  CONVNET_CHECK(beta2 >= 0 && beta2 < 1, "solver ", name, ": beta2 must be in [0, 1), got ", beta2);
  CONVNET_CHECK(eps > 0 && std::isfinite(eps), "solver ", name, ": eps must be > 0, got ", eps);
}

nlohmann::json SolverOptions::to_json() const {
  return {{"name", name}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}};
}

SolverOptions SolverOptions::from_json(const nlohmann::json& j) {
  CONVNET_CHECK(j.is_object(), "solver: expected a JSON object, got ", j.dump());
  SolverOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "name" && it->is_string()) o.name = it->get<std::string>();
    else if (key == "beta1" && it->is_number()) o.beta1 = it->get<double>();
    else if (key == "beta2" && it->is_number()) o.beta2 = it->get<double>();
    else if (key == "eps" && it->is_number()) o.eps = it->get<double>();
    else throw ValueError("solver: unknown or mistyped key '" + key + "' = " + it->dump() +
                          " (expected name, beta1, beta2, eps)");
  }
  o.validate();
  return o;
}

std::string SolverOptions::text() const {
  if (name != "adamw") return name;
  std::ostringstream s;
  s << name << "[beta1=" << beta1 << ";beta2=" << beta2 << ";eps=" << eps << "]";
  return s.str();
}

std::unique_ptr<Solver> Solver::make(const SolverOptions& options) {
  options.validate();
  if (options.name == "nesterov") return std::make_unique<Nesterov>(options);
  if (options.name == "adamw") return std::make_unique<AdamW>(options);
  return std::make_unique<Sgd>(options);
}

void Solver::init_state(Param& p) const {
  p.state.clear();
  for (const std::string& s : state_names())
    p.state[s] = Tensor::zeros(p.value.shape(), p.value.device());
}

}  // namespace convnet

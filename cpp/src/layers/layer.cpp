// The Layer base class, parameter creation from options, the shared workspace, the option groups
// several types declare, and make_layer (a layer from its registered declaration).
#include "convnet/layer.h"

#include <cmath>

#include "convnet/error.h"
#include "convnet/ops.h"
#include "convnet/schedule.h"

namespace convnet {

Tensor Workspace::get(int64_t floats, int slot) {
  if (slot >= static_cast<int>(slots_.size())) slots_.resize(slot + 1);
  Tensor& t = slots_[slot];
  if (!t.defined() || t.numel() < floats) t = Tensor({static_cast<int>(floats)}, device_);
  return t.view(0, {static_cast<int>(floats)});
}

int64_t Workspace::bytes() const {
  int64_t b = 0;
  for (const auto& t : slots_) b += t.storage_bytes();
  return b;
}

Layer::Layer(const LayerSpec& spec) : spec_(spec) {}

void Layer::place(const Device& device, Workspace* workspace, bool own_gradients) {
  device_ = device;
  workspace_ = workspace;
  for (Param& p : params_) {
    if (p.value.device() != device) {  // parameters are initialised on the host
      Tensor host_value = p.value;
      p.value = Tensor(host_value.shape(), device);
      p.value.copy_from(host_value);
    }
    p.grad = own_gradients ? Tensor::zeros(p.value.shape(), device) : Tensor();
  }
}

Tensor& Param::state_tensor(const std::string& key) {
  auto it = state.find(key);
  if (it == state.end()) {
    std::string have;
    for (const auto& [k, t] : state) have += (have.empty() ? "" : ", ") + k;
    throw ValueError("parameter '" + name + "' has no solver state '" + key + "' (it has: " +
                     (have.empty() ? "none" : have) + ")");
  }
  return it->second;
}

std::vector<OptionDecl> learning_options() {
  using K = OptionDecl::Kind;
  using P = OptionDecl::Presence;
  return {
      {"epsW", K::Float, P::Defaulted, 0.01, "learning rate of the weights"},
      {"epsB", K::Float, P::Defaulted, 0.01, "learning rate of the biases"},
      {"scheduleW", K::String, P::Defaulted, "",
       "the weights' own learning-rate schedule, replacing the run's (cuda-convnet2's per-layer "
       "epsW=dexp[...]; any convnet/schedule.h form but plateau; empty: the run's)"},
      {"scheduleB", K::String, P::Defaulted, "", "the biases' own learning-rate schedule (as scheduleW)"},
      {"momW", K::Float, P::Defaulted, 0.9, "momentum of the weights"},
      {"momB", K::Float, P::Defaulted, 0.9, "momentum of the biases"},
      {"wc", K::Float, P::Defaulted, 0.0005, "weight decay of the weights"},
      {"wcB", K::Float, P::Defaulted, 0.0, "weight decay of the biases"},
      {"updatePeriod", K::Int, P::Defaulted, 1,
       "update the weights and biases every N training steps, with the sum of those steps' gradients "
       "(cuda-convnet2's updatePeriod; 0 or 1: every step)"},
      {"init", K::String, P::Defaulted, "gaussian",
       "weight init: gaussian (std initW), kaiming (std sqrt(2/fan_in)), xavier (sqrt(1/fan_in))"},
      {"initW", K::Float, P::Defaulted, 0.01, "std of the gaussian weight init"},
      {"initB", K::Float, P::Defaulted, 0.0, "constant bias init"},
      {"bias", K::Bool, P::Defaulted, true, "whether the layer has biases"},
  };
}

std::vector<OptionDecl> neuron_options(const std::string& default_neuron) {
  using K = OptionDecl::Kind;
  using P = OptionDecl::Presence;
  return {
      {"neuron", K::String, P::Defaulted, default_neuron,
       "activation: linear, relu, leaky_relu, tanh, logistic, abs, ..."},
      {"slope", K::Float, P::Defaulted, 0.01, "negative slope of leaky_relu"},
  };
}

Neuron Layer::read_neuron() const {
  Neuron n = Neuron::parse(spec_.options.get_string("neuron"));
  if (n.type == NeuronType::LeakyRelu) n.slope = float(spec_.options.get_float("slope"));
  return n;
}

Tensor Layer::gradient_before_neuron(const Neuron& neuron, const Tensor& out, const Tensor& dout,
                                     Tensor& scratch, const PassContext& ctx) const {
  if (neuron.type == NeuronType::Linear) return dout;
  if (ctx.dout_disposable) {  // elementwise: each element is read before it is written
    Tensor in_place = dout;
    neuron_backward(out, dout, in_place, neuron, false);
    return in_place;
  }
  if (!scratch.defined() || scratch.shape() != out.shape()) scratch = Tensor(out.shape(), device_);
  neuron_backward(out, dout, scratch, neuron, false);
  return scratch;
}

Param& Layer::add_param(const std::string& suffix, Shape shape, bool is_bias, int64_t fan_in) {
  const LayerOptions& o = spec_.options;
  Param p;
  p.name = name() + "." + suffix;
  const char* key = is_bias ? "B" : "W";
  p.lr = static_cast<float>(o.get_float(std::string("eps") + key));
  p.base_lr = p.lr;
  p.momentum = static_cast<float>(o.get_float(std::string("mom") + key));
  p.weight_decay = static_cast<float>(o.get_float(is_bias ? "wcB" : "wc"));
  CONVNET_CHECK(p.lr >= 0 && p.momentum >= 0 && p.weight_decay >= 0, where(),
                ": learning rate, momentum and weight decay must be >= 0");
  const int period = o.get_int("updatePeriod");
  CONVNET_CHECK(period >= 0, where(), ": updatePeriod ", period, " must be >= 0");
  p.update_period = std::max(1, period);
  p.schedule = o.get_string(std::string("schedule") + key);
  if (!p.schedule.empty()) {
    Schedule parsed;
    try {
      parsed = Schedule::parse(p.schedule);
    } catch (const ValueError& e) {
      throw ValueError(where() + ": schedule" + key + ": " + e.what());
    }
    // A plateau schedule keeps state that checkpoints store per run, not per parameter.
    CONVNET_CHECK(parsed.type() != "plateau", where(), ": schedule", key,
                  " cannot be a plateau schedule (give it to the run: --schedule)");
  }
  if (is_bias) {
    p.init = Param::Init::Constant;
    p.init_value = static_cast<float>(o.get_float("initB"));
  } else {
    const std::string init = o.get_string("init");
    const double init_w = o.get_float("initW");
    p.init = Param::Init::Gaussian;
    if (init == "gaussian") p.init_std = static_cast<float>(init_w);
    else if (init == "kaiming") p.init_std = static_cast<float>(std::sqrt(2.0 / double(fan_in)));
    else if (init == "xavier") p.init_std = static_cast<float>(std::sqrt(1.0 / double(fan_in)));
    else throw ValueError(where() + ": unknown init '" + init + "' (expected gaussian, kaiming or xavier)");
  }
  p.value = Tensor(std::move(shape), Device::cpu());  // filled by the Net's initialiser
  params_.push_back(std::move(p));
  return params_.back();
}

nlohmann::json Layer::options_in_effect() const {
  nlohmann::json out = nlohmann::json::object();
  const nlohmann::json& given = spec_.options.values();
  for (const OptionDecl& o : declaration_->options()) {
    auto it = given.find(o.name);
    out[o.name] = it != given.end() ? *it : o.fallback;
  }
  return out;
}

std::vector<std::string> layer_types() {
  std::vector<std::string> out;
  for (const LayerType* t : registered_layer_types()) out.push_back(t->name());
  return out;
}

std::unique_ptr<Layer> make_layer(const LayerSpec& spec) {
  const LayerType* type = find_layer_type(spec.type);
  if (!type) {
    std::string known;
    for (const auto& t : layer_types()) known += (known.empty() ? "" : ", ") + t;
    throw ValueError("layer '" + spec.name + "': unknown layer type '" + spec.type +
                     "' (known types: " + known + ")");
  }
  for (auto it = spec.options.values().begin(); it != spec.options.values().end(); ++it) {
    if (type->find_option(it.key())) continue;
    std::string known;
    for (const OptionDecl& o : type->options()) known += (known.empty() ? "" : ", ") + o.name;
    throw ValueError("layer '" + spec.name + "': unknown option '" + it.key() + "' (" + spec.type +
                     " layers take: " + (known.empty() ? "no options" : known) + ")");
  }
  LayerSpec declared = spec;  // shares the record of options read with `spec`
  declared.options.declare(type);
  std::unique_ptr<Layer> layer = type->factory()(declared);
  layer->declaration_ = type;
  return layer;
}

void Layer::backward_through_pool(const std::vector<Tensor>&, const Tensor&, const Tensor&,
                                  const Tensor&, const PoolGeometry&, std::vector<Tensor>&,
                                  const std::vector<bool>&) {
  throw RuntimeError(where() + " cannot run the backward pass of the pooling that reads it");
}

}  // namespace convnet

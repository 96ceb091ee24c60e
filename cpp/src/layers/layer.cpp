// The Layer base class, parameter creation from options, the shared workspace and the registry.
#include "convnet/layer.h"

#include <cmath>

#include "convnet/error.h"
#include "convnet/ops.h"
#include "layers/factories.h"

namespace convnet {

float* Workspace::get(int64_t floats, int slot) {
  if (slot >= static_cast<int>(slots_.size())) slots_.resize(slot + 1);
  Tensor& t = slots_[slot];
  if (!t.defined() || t.numel() < floats) t = Tensor({static_cast<int>(floats)}, device_);
  return t.data();
}

int64_t Workspace::bytes() const {
  int64_t b = 0;
  for (const auto& t : slots_) b += t.defined() ? t.numel() * 4 : 0;
  return b;
}

Layer::Layer(const LayerSpec& spec) : spec_(spec) {}

void Layer::place(const Device& device, Workspace* workspace) {
  device_ = device;
  workspace_ = workspace;
  for (Param& p : params_) {
    if (p.value.device() != device) {  // parameters are initialised on the host
      Tensor host_value = p.value;
      p.value = Tensor(host_value.shape(), device);
      p.value.copy_from(host_value);
    }
    p.grad = Tensor::zeros(p.value.shape(), device);
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

Neuron Layer::read_neuron(const std::string& fallback) const {
  Neuron n = Neuron::parse(spec_.options.get_string("neuron", fallback));
  if (n.type == NeuronType::LeakyRelu) n.slope = float(spec_.options.get_float("slope", 0.01));
  return n;
}

Tensor Layer::gradient_before_neuron(const Neuron& neuron, const Tensor& out, const Tensor& dout,
                                     Tensor& scratch) const {
  if (neuron.type == NeuronType::Linear) return dout;
  if (!scratch.defined() || scratch.shape() != out.shape()) scratch = Tensor(out.shape(), device_);
  neuron_backward(out, dout, scratch, neuron, false);
  return scratch;
}

Param& Layer::add_param(const std::string& suffix, Shape shape, bool is_bias, int64_t fan_in) {
  const LayerOptions& o = spec_.options;
  Param p;
  p.name = name() + "." + suffix;
  const char* key = is_bias ? "B" : "W";
  p.lr = static_cast<float>(o.get_float(std::string("eps") + key, 0.01));
  p.base_lr = p.lr;
  p.momentum = static_cast<float>(o.get_float(std::string("mom") + key, 0.9));
  p.weight_decay = static_cast<float>(o.get_float(is_bias ? "wcB" : "wc", is_bias ? 0.0 : 0.0005));
  CONVNET_CHECK(p.lr >= 0 && p.momentum >= 0 && p.weight_decay >= 0, where(),
                ": learning rate, momentum and weight decay must be >= 0");
  if (is_bias) {
    p.init = Param::Init::Constant;
    p.init_value = static_cast<float>(o.get_float("initB", 0.0));
  } else {
    const std::string init = o.get_string("init", "gaussian");
    const double init_w = o.get_float("initW", 0.01);
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

using Factory = std::unique_ptr<Layer> (*)(const LayerSpec&);
static const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"input", make_input_layer},       {"labels", make_labels_layer},
      {"conv", make_conv_layer},         {"fc", make_fc_layer},
      {"pool", make_pool_layer},         {"lrn", make_lrn_layer},
      {"neuron", make_neuron_layer},     {"dropout", make_dropout_layer},
      {"softmax_cost", make_softmax_cost_layer},
      {"concat", make_concat_layer},     {"split", make_split_layer},
      {"sum", make_sum_layer},
  };
  return r;
}

std::vector<std::string> layer_types() {
  std::vector<std::string> out;
  for (const auto& [name, f] : registry()) out.push_back(name);
  return out;
}

std::unique_ptr<Layer> make_layer(const LayerSpec& spec) {
  for (const auto& [name, factory] : registry())
    if (name == spec.type) return factory(spec);
  std::string known;
  for (const auto& t : layer_types()) known += (known.empty() ? "" : ", ") + t;
  throw ValueError("layer '" + spec.name + "': unknown layer type '" + spec.type +
                   "' (known types: " + known + ")");
}

void Layer::backward_through_pool(const std::vector<Tensor>&, const Tensor&, const Tensor&,
                                  const Tensor&, const PoolGeometry&, std::vector<Tensor>&,
                                  const std::vector<bool>&) {
  throw RuntimeError(where() + " cannot run the backward pass of the pooling that reads it");
}

}  // namespace convnet

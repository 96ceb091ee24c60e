// The one interface every layer has (as Caffe's): setup from input shapes, forward, backward.
// Layers are device-agnostic: they hold Tensors and call the ops of convnet/ops.h.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "convnet/layer_type.h"
#include "convnet/ops.h"
#include "convnet/spec.h"
#include "convnet/tensor.h"

namespace convnet {

// A learned parameter with its gradient, its solver's state and its learning hyperparameters
// (cuda-convnet's epsW/momW/wc for weights, epsB/momB for biases).
struct Param {
  std::string name;  // "<layer>.weights" or "<layer>.biases"
  Tensor value;
  // In a Net, a view into its device's gradient bucket (Net::gradient_buckets).
  Tensor grad;
  // The solver's per-parameter tensors by name, allocated (zero) by the Net for its solver
  // (convnet/solver.h): "velocity" for SGD and Nesterov, "m" and "v" for AdamW.
  std::map<std::string, Tensor> state;
  // state.at(key), with an error naming the parameter and the state it has.
  Tensor& state_tensor(const std::string& key);
  float lr = 0.01f, momentum = 0.9f, weight_decay = 0.f;
  // Training steps between updates (the layer's updatePeriod): the Net sums the gradients of
  // the steps in between into `accumulated` and updates with the sum on every update_period-th.
  int update_period = 1;
  Tensor accumulated;  // defined when update_period > 1
  // The rate the model definition gives (epsW/epsB); a trainer's schedule sets lr to a multiple
  // of it each step.
  float base_lr = 0.01f;
  // The parameter's own schedule (the layer's scheduleW/scheduleB, convnet/schedule.h text),
  // used instead of the run's; empty: the run's.
  std::string schedule;
  // Initialisation, applied once when the net is built.
  enum class Init { Gaussian, Constant } init = Init::Gaussian;
  float init_std = 0.01f, init_value = 0.f;
};

// Per-device scratch memory shared by the layers placed on one device (im2col columns).
class Workspace {
 public:
  explicit Workspace(Device device) : device_(device) {}
  // `floats` floats of slot `slot` (a flat view); contents undefined. Grows, never shrinks.
  Tensor get(int64_t floats, int slot = 0);
  int64_t bytes() const;

 private:
  Device device_;
  std::vector<Tensor> slots_;
};

// What a layer needs to know about the pass it runs in.
struct PassContext {
  bool train = true;
  uint64_t seed = 0;  // the net's seed (dropout masks)
  uint64_t step = 0;  // the training step (dropout masks differ per step)
  BatchShard shard;   // where this batch lies in a data-parallel global batch (dropout masks)
  // The batch a cost layer's mean is over: the net's whole batch, of which a replica of a
  // data-parallel layer sees a part (0: the layer's own batch).
  int objective_batch = 0;
  float mean_over(int own_batch) const { return float(objective_batch ? objective_batch : own_batch); }
  // backward may overwrite dout: it is the net's own buffer, which nothing reads after this
  // layer's backward (a layer called alone keeps the caller's dout intact).
  bool dout_disposable = false;
};

class Layer {
 public:
  explicit Layer(const LayerSpec& spec);
  virtual ~Layer() = default;

  const std::string& name() const { return spec_.name; }
  const std::string& type() const { return spec_.type; }
  const std::vector<std::string>& inputs() const { return spec_.inputs; }
  const LayerSpec& spec() const { return spec_; }
  // The declaration this layer was made from (set by make_layer): its role, inputs and options.
  const LayerType& declaration() const { return *declaration_; }
  LayerRole role() const { return declaration_->role(); }
  bool is_cost() const { return role() == LayerRole::Cost; }
  bool is_input() const { return is_filled_from_outside(role()); }
  // Every declared option as in effect: as given, else its default (null: optional, not given).
  nlohmann::json options_in_effect() const;

  // Checks the input shapes ({C, H, W, N} each), creates parameters on first call, and returns
  // the output shape. Called again when the batch size changes. Errors name the layer.
  virtual Shape setup(const std::vector<Shape>& inputs) = 0;
  // Moves the parameters to `device` and, with own_gradients, allocates their gradients there (a
  // layer used alone; a Net passes false and makes the gradients views of its buckets, so that
  // no second copy of every gradient is ever allocated).
  virtual void place(const Device& device, Workspace* workspace, bool own_gradients = true);

  virtual void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext& ctx) = 0;
  // din[i] is undefined when input i needs no gradient. accumulate[i]: add into din[i] rather
  // than overwrite it. Parameter gradients are overwritten (batch-averaged by the cost).
  virtual void backward(const std::vector<Tensor>& in, const Tensor& out, const Tensor& dout,
                        std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                        const PassContext& ctx) = 0;

  std::vector<Param>& params() { return params_; }
  // Cost layers (role Cost) report statistics of their last forward pass and their weight in
  // the objective.
  virtual CostStats cost_stats() const { return {}; }
  virtual float cost_coeff() const { return 0.f; }
  // The tensors the layer keeps between calls besides its parameters (kept for backward,
  // scratch), by name, undefined ones included: for the net's memory accounting (Net::memory_use).
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  virtual NamedTensors buffers() const { return {}; }

  // LRN then pooling (AlexNet's conv1 and conv2 blocks): where a pool layer is the only reader
  // of an LRN layer's output, the net skips the pool's backward and has the LRN layer go back
  // through both (ops.h lrn_pool_backward), so that on a GPU the gradient of the LRN output is
  // neither written nor allocated. Pool layers give their geometry; LRN layers implement
  // backward_through_pool (pooled and dpooled: the pool's output and its gradient).
  virtual const PoolGeometry* pool_geometry() const { return nullptr; }
  virtual bool goes_back_through_pool() const { return false; }
  virtual void backward_through_pool(const std::vector<Tensor>& in, const Tensor& out,
                                     const Tensor& pooled, const Tensor& dpooled,
                                     const PoolGeometry& pool, std::vector<Tensor>& din,
                                     const std::vector<bool>& accumulate);

 protected:
  // Adds a parameter named "<layer>.<suffix>" with the hyperparameters read from the options
  // (`eps<Key>`, `mom<Key>`, `wc<Key>`, `init<Key>`, Key = W or B; see learning_options()).
  // `fan_in` serves the scaled inits: init="kaiming" gives std sqrt(2 / fan_in), "xavier"
  // sqrt(1 / fan_in); the default "gaussian" takes std = initW (the AlexNet paper: 0.01).
  Param& add_param(const std::string& suffix, Shape shape, bool is_bias, int64_t fan_in);
  std::string where() const { return "layer '" + name() + "' (" + type() + ")"; }
  // The `neuron` option (and `slope` for leaky relu), for the layers that apply one.
  Neuron read_neuron() const;
  // The gradient before a fused neuron: dout itself for a linear neuron, else dout * f',
  // written over dout where the pass allows it (PassContext::dout_disposable), else into
  // `scratch` (allocated on first use).
  Tensor gradient_before_neuron(const Neuron& neuron, const Tensor& out, const Tensor& dout,
                                Tensor& scratch, const PassContext& ctx) const;

  LayerSpec spec_;
  friend std::unique_ptr<Layer> make_layer(const LayerSpec& spec);
  const LayerType* declaration_ = nullptr;
  std::vector<Param> params_;
  Device device_;
  Workspace* workspace_ = nullptr;
};

// Creates the layer for spec.type from its registered declaration; throws ValueError naming the
// layer for an unknown type or an undeclared option.
std::unique_ptr<Layer> make_layer(const LayerSpec& spec);
// The names of the registered layer types.
std::vector<std::string> layer_types();

// Option groups that several types declare: the learning hyperparameters and initialisation of
// a layer with weights and biases (read by add_param), and a fused neuron (read by read_neuron)
// with the type's own default.
std::vector<OptionDecl> learning_options();
std::vector<OptionDecl> neuron_options(const std::string& default_neuron);

}  // namespace convnet

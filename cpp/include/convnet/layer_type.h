// A layer type's one declaration: its name, role, inputs, options (names, defaults, help) and
// the factory that builds it. Each layer file registers its own (CONVNET_REGISTER_LAYER), as
// Caffe's REGISTER_LAYER_CLASS does; the net, the checks of a model definition, the Python
// builder (convnet.Model's methods and their help) and the docs all read it from here, so an
// option's name and default are written once.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace convnet {

class Layer;
struct LayerSpec;

// What the net does with a layer, beyond forward and backward.
enum class LayerRole {
  Input,   // filled from outside with images (Net::set_input); no gradient
  Labels,  // filled from outside with class indices; no gradient
  Hidden,  // everything else between the inputs and the costs
  Cost,    // starts the backward pass; reports a cost (and error rates when it classifies)
};
const char* role_name(LayerRole role);
inline bool is_filled_from_outside(LayerRole role) {
  return role == LayerRole::Input || role == LayerRole::Labels;
}

struct OptionDecl {
  enum class Kind { Int, Float, Bool, String, Floats };
  enum class Presence {
    Defaulted,  // absent means `fallback`
    Required,   // absent is an error
    Optional,   // absent is allowed; the layer decides (the help says what it means)
  };
  std::string name;
  Kind kind = Kind::Float;
  Presence presence = Presence::Defaulted;
  nlohmann::json fallback;  // for Defaulted
  std::string help;
};
const char* kind_name(OptionDecl::Kind kind);

class LayerType {
 public:
  using Factory = std::unique_ptr<Layer> (*)(const LayerSpec&);

  LayerType(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}

  // ---- the declaration, written as a chain in the layer's file ----
  LayerType& role(LayerRole r) {
    role_ = r;
    return *this;
  }
  // A cost whose output is each case's class probabilities {K, 1, 1, N}: it reports top-1 and
  // top-5 errors, the trainer's metrics and the 10-view test read it.
  LayerType& classifies() {
    classifies_ = true;
    return *this;
  }
  // Inputs with names (the Python method takes them one by one, in this order)...
  LayerType& inputs(std::vector<std::string> names);
  // ...or any number in [lo, hi] (hi < 0: unbounded), passed as one list.
  LayerType& inputs(int lo, int hi);
  // An option with a default; its kind is the default's (1: int, 1.0: float, true, "text").
  LayerType& option(std::string name, nlohmann::json fallback, std::string help);
  LayerType& required(std::string name, OptionDecl::Kind kind, std::string help);
  LayerType& optional(std::string name, OptionDecl::Kind kind, std::string help);
  LayerType& options(const std::vector<OptionDecl>& group);
  template <class L>
  LayerType& make() {
    factory_ = [](const LayerSpec& s) -> std::unique_ptr<Layer> { return std::make_unique<L>(s); };
    return *this;
  }

  // ---- what the rest of the engine reads ----
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  LayerRole role() const { return role_; }
  bool is_classifier() const { return classifies_; }
  std::pair<int, int> input_count() const { return {min_inputs_, max_inputs_}; }
  const std::vector<std::string>& input_names() const { return input_names_; }  // may be empty
  const std::vector<OptionDecl>& options() const { return options_; }
  const OptionDecl* find_option(const std::string& name) const;
  Factory factory() const { return factory_; }
  // The declaration as JSON (what convnet._core.layer_types() returns to Python).
  nlohmann::json describe() const;

 private:
  std::string name_, help_;
  LayerRole role_ = LayerRole::Hidden;
  bool classifies_ = false;
  int min_inputs_ = 1, max_inputs_ = 1;
  std::vector<std::string> input_names_;
  std::vector<OptionDecl> options_;
  Factory factory_ = nullptr;
};

// Every registered type, in name order.
std::vector<const LayerType*> registered_layer_types();
// The type called `name`, or nullptr.
const LayerType* find_layer_type(const std::string& name);

// Registers a declaration at static-initialisation time. The core library is linked whole (see
// CMakeLists.txt), so a layer file needs no other file to mention it.
struct LayerRegistration {
  explicit LayerRegistration(const LayerType& type);
};

#define CONVNET_LAYER_CONCAT_(a, b) a##b
#define CONVNET_LAYER_CONCAT(a, b) CONVNET_LAYER_CONCAT_(a, b)
#define CONVNET_REGISTER_LAYER(declaration)                                                   \
  static const ::convnet::LayerRegistration CONVNET_LAYER_CONCAT(convnet_layer_registration_, \
                                                                 __COUNTER__)(declaration)

}  // namespace convnet

// A model definition: an ordered list of named layer specs, each with a type, named inputs, a
// logical device and its options (sizes, neuron, init and learning hyperparameters). Read from and
// written to JSON; the Python model builder produces the same JSON.
//
//   {"layers": [{"name": "data", "type": "input", "channels": 3, "size": 224},
//               {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 96, ...}]}
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace convnet {

class LayerType;

// Every integer option of a layer passes this one range check on its way to a C++ int, wherever
// it comes from (a model file, the Python model builder, a cuda-convnet2 cfg): `value` as an int,
// or ValueError "<where> is <value>, outside [-2^24, 2^24]" (`where` names the layer and the
// option; `written`, when given, is shown for the value: the text of one beyond int64). The bound is far above any real filter count, size, stride, padding or class count,
// and low enough that sums and products of two options (height + 2 * padding, filters * groups)
// cannot wrap an int; values beyond it would otherwise wrap (2^32 + 4 filters read as 4) or
// overflow the geometry's arithmetic. Each layer then checks its own meaning (filters > 0, ...).
constexpr int64_t kOptionIntLimit = int64_t(1) << 24;
int option_int(int64_t value, const std::string& where, const std::string& written = "");

// A layer's options, read through typed getters that name the layer in every error. Once the
// layer's type is declared (make_layer does it), an absent option reads as the type's declared
// default, so that each default is written once, in the declaration (convnet/layer_type.h). The
// set of keys read is remembered so that an option the layer did not use is reported rather than
// silently ignored.
class LayerOptions {
 public:
  LayerOptions() = default;
  LayerOptions(std::string layer, nlohmann::json values);

  // Reads from now on go through `type`'s declaration: an undeclared key is an engine bug
  // (RuntimeError), an absent key reads as its default.
  void declare(const LayerType* type) { type_ = type; }
  // Whether the definition gives this key (for options declared optional, whose absence the
  // layer interprets).
  bool has(const std::string& key) const;
  // The given value, else the declared default; a missing required option is a ValueError.
  int get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<double> get_floats(const std::string& key) const;  // a number or a list

  // Throws ValueError naming the first given option that no getter asked for.
  void reject_unread() const;
  const nlohmann::json& values() const { return values_; }

 private:
  const nlohmann::json* find(const std::string& key) const;
  std::string layer_;
  nlohmann::json values_ = nlohmann::json::object();
  const LayerType* type_ = nullptr;
  // Shared among copies, so that whichever copy a layer reads through, the net sees the reads.
  std::shared_ptr<std::set<std::string>> read_ = std::make_shared<std::set<std::string>>();
};

struct LayerSpec {
  std::string name;
  std::string type;
  std::vector<std::string> inputs;
  int device = 0;  // logical device (cuda-convnet's gpu=); the Net maps it to a physical one
  // A layer given several logical devices ("device": [0, 1, 2, 3], cuda-convnet2's gpu=0,1,2,3)
  // is replicated, data parallel: replica r runs on replicas[r] with the r-th part of the
  // batch. Empty: one copy on `device`. When set, device == replicas[0].
  std::vector<int> replicas;
  LayerOptions options;
};

struct ModelSpec {
  std::vector<LayerSpec> layers;

  // Throws ValueError on malformed JSON or a layer without name/type, naming the layer.
  static ModelSpec from_json(const std::string& text);
  static ModelSpec from_file(const std::string& path);
  // How many logical devices the layers name (1 + the highest).
  int logical_devices() const;
  std::string to_json(int indent = 2) const;
};

}  // namespace convnet

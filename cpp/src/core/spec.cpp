// Model definitions: JSON in, LayerSpecs out, with errors that name the layer and the option.
#include "convnet/spec.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "convnet/error.h"
#include "convnet/layer_type.h"

namespace convnet {

using nlohmann::json;

int option_int(int64_t value, const std::string& where, const std::string& written) {
  CONVNET_CHECK(value >= -kOptionIntLimit && value <= kOptionIntLimit, where, " is ",
                written.empty() ? std::to_string(value) : written, ", outside the range of an integer option [",
                -kOptionIntLimit, ", ", kOptionIntLimit, "]");
  return int(value);
}

// A JSON number as an int through option_int: an integer, or a float with an integral value
// (2.0); one too large for int64 is out of range rather than wrapped.
static int json_int(const json& v, const std::string& where) {
  constexpr int64_t beyond = std::numeric_limits<int64_t>::max();
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(beyond)) return option_int(beyond, where, v.dump());
  if (v.is_number_integer()) return option_int(v.get<int64_t>(), where);
  const double d = v.is_number() ? v.get<double>() : 0.5;
  CONVNET_CHECK(std::isfinite(d) && d == std::floor(d), where, " must be an integer, got ", v.dump());
  if (std::fabs(d) > double(kOptionIntLimit)) return option_int(beyond, where, v.dump());
  return option_int(int64_t(d), where);
}

LayerOptions::LayerOptions(std::string layer, json values)
    : layer_(std::move(layer)), values_(std::move(values)) {}

// The declaration of `key` when the type is declared; reading an undeclared key is a bug in the
// layer's file, not the user's mistake.
static const OptionDecl* declaration(const LayerType* type, const std::string& layer,
                                     const std::string& key) {
  if (!type) return nullptr;
  const OptionDecl* d = type->find_option(key);
  if (!d)
    throw RuntimeError("layer '" + layer + "' (" + type->name() + ") reads option '" + key +
                       "', which its type does not declare");
  return d;
}

bool LayerOptions::has(const std::string& key) const {
  declaration(type_, layer_, key);
  read_->insert(key);
  auto it = values_.find(key);
  return it != values_.end() && !it->is_null();
}

const json* LayerOptions::find(const std::string& key) const {
  const OptionDecl* d = declaration(type_, layer_, key);
  if (has(key)) return &*values_.find(key);
  if (!d || d->presence == OptionDecl::Presence::Required) return nullptr;
  if (d->presence == OptionDecl::Presence::Optional)
    throw RuntimeError("layer '" + layer_ + "' reads optional option '" + key +
                       "' without asking whether it is given");
  return &d->fallback;
}

int LayerOptions::get_int(const std::string& key) const {
  const json* v = find(key);
  CONVNET_CHECK(v, "layer '", layer_, "': missing option '", key, "'");
  return json_int(*v, "layer '" + layer_ + "': option '" + key + "'");
}

double LayerOptions::get_float(const std::string& key) const {
  const json* v = find(key);
  CONVNET_CHECK(v, "layer '", layer_, "': missing option '", key, "'");
  CONVNET_CHECK(v->is_number() && std::isfinite(v->get<double>()), "layer '", layer_, "': option '", key,
                "' must be a finite number, got ", v->dump());
  return v->get<double>();
}

bool LayerOptions::get_bool(const std::string& key) const {
  const json* v = find(key);
  CONVNET_CHECK(v, "layer '", layer_, "': missing option '", key, "'");
  if (v->is_boolean()) return v->get<bool>();
  // int64: get<int> would wrap 2^32 + 1 to 1.
  if (v->is_number_integer() && (v->get<int64_t>() == 0 || v->get<int64_t>() == 1)) return v->get<int64_t>() == 1;
  throw ValueError("layer '" + layer_ + "': option '" + key + "' must be true or false, got " + v->dump());
}

std::string LayerOptions::get_string(const std::string& key) const {
  const json* v = find(key);
  CONVNET_CHECK(v, "layer '", layer_, "': missing option '", key, "'");
  CONVNET_CHECK(v->is_string(), "layer '", layer_, "': option '", key, "' must be a string, got ",
                v->dump());
  return v->get<std::string>();
}

std::vector<double> LayerOptions::get_floats(const std::string& key) const {
  const json* v = find(key);
  CONVNET_CHECK(v, "layer '", layer_, "': missing option '", key, "'");
  if (v->is_number()) return {v->get<double>()};
  CONVNET_CHECK(v->is_array(), "layer '", layer_, "': option '", key,
                "' must be a number or a list of numbers, got ", v->dump());
  std::vector<double> out;
  for (const auto& e : *v) {
    CONVNET_CHECK(e.is_number() && std::isfinite(e.get<double>()), "layer '", layer_, "': option '", key,
                  "' must hold finite numbers, got ", e.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

void LayerOptions::reject_unread() const {
  for (auto it = values_.begin(); it != values_.end(); ++it) {
    if (read_->count(it.key())) continue;
    if (type_ && type_->find_option(it.key()))  // declared, but these settings do not use it
      throw ValueError("layer '" + layer_ + "': option '" + it.key() +
                       "' has no effect with the layer's other settings");
    std::string known;
    for (const auto& k : *read_) known += (known.empty() ? "" : ", ") + k;
    throw ValueError("layer '" + layer_ + "': unknown option '" + it.key() +
                     "' (this layer type reads: " + known + ")");
  }
}

ModelSpec ModelSpec::from_json(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    throw ValueError(std::string("model definition is not valid JSON: ") + e.what());
  }
  const json* layers = &doc;
  if (doc.is_object()) {
    CONVNET_CHECK(doc.contains("layers"), "model definition: expected a \"layers\" list");
    for (const auto& item : doc.items())  // a misspelt key is an error, as in a layer
      CONVNET_CHECK(item.key() == "layers", "model definition: unknown top-level key '", item.key(),
                    "' (a model definition is {\"layers\": [...]})");
    layers = &doc["layers"];
  }
  CONVNET_CHECK(layers->is_array(), "model definition: \"layers\" must be a list");
  ModelSpec spec;
  int index = 0;
  for (const json& l : *layers) {
    const std::string where = "model definition, layer #" + std::to_string(index++);
    CONVNET_CHECK(l.is_object(), where, ": expected an object, got ", l.dump());
    CONVNET_CHECK(l.contains("name") && l["name"].is_string() && !l["name"].get<std::string>().empty(),
                  where, ": missing \"name\"");
    LayerSpec s;
    s.name = l["name"].get<std::string>();
    CONVNET_CHECK(l.contains("type") && l["type"].is_string(), "layer '", s.name,
                  "': missing \"type\"");
    s.type = l["type"].get<std::string>();
    json options = l;
    options.erase("name");
    options.erase("type");
    if (l.contains("inputs")) {
      const json& in = l["inputs"];
      if (in.is_string()) {
        s.inputs.push_back(in.get<std::string>());
      } else {
        CONVNET_CHECK(in.is_array(), "layer '", s.name, "': \"inputs\" must be a list of names");
        for (const json& e : in) {
          CONVNET_CHECK(e.is_string(), "layer '", s.name, "': \"inputs\" must be a list of names");
          s.inputs.push_back(e.get<std::string>());
        }
      }
      options.erase("inputs");
    }
    if (l.contains("device")) {
      const json& d = l["device"];
      auto logical = [&](const json& e) {
        const char* what = "\" must be a logical device number >= 0, or a list of them (one per replica)";
        CONVNET_CHECK(e.is_number_integer(), "layer '", s.name, "': \"device", what);
        const int k = json_int(e, "layer '" + s.name + "': \"device\"");
        CONVNET_CHECK(k >= 0, "layer '", s.name, "': \"device", what);
        return k;
      };
      if (d.is_array()) {
        CONVNET_CHECK(!d.empty(), "layer '", s.name, "': \"device\" is an empty list");
        for (const json& e : d) {
          const int k = logical(e);
          CONVNET_CHECK(std::find(s.replicas.begin(), s.replicas.end(), k) == s.replicas.end(),
                        "layer '", s.name, "': logical device ", k,
                        " is named twice in \"device\": each replica needs a device of its own");
          s.replicas.push_back(k);
        }
        s.device = s.replicas[0];
        if (s.replicas.size() == 1) s.replicas.clear();
      } else {
        s.device = logical(d);
      }
      options.erase("device");
    }
    s.options = LayerOptions(s.name, options);
    spec.layers.push_back(std::move(s));
  }
  return spec;
}

ModelSpec ModelSpec::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ValueError("cannot open model definition '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return from_json(ss.str());
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
}

int ModelSpec::logical_devices() const {
  int count = 1;
  for (const LayerSpec& l : layers) {
    count = std::max(count, l.device + 1);
    for (int d : l.replicas) count = std::max(count, d + 1);
  }
  return count;
}

std::string ModelSpec::to_json(int indent) const {
  json out = json::array();
  for (const LayerSpec& s : layers) {
    json l = s.options.values();
    l["name"] = s.name;
    l["type"] = s.type;
    if (!s.inputs.empty()) l["inputs"] = s.inputs;
    if (!s.replicas.empty()) l["device"] = s.replicas;
    else if (s.device != 0) l["device"] = s.device;
    out.push_back(std::move(l));
  }
  return json{{"layers", out}}.dump(indent);
}

}  // namespace convnet

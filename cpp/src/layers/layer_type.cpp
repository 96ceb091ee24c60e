// Layer type declarations and their registry.
#include "convnet/layer_type.h"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "convnet/error.h"

namespace convnet {

using nlohmann::json;

const char* role_name(LayerRole role) {
  switch (role) {
    case LayerRole::Input:
      return "input";
    case LayerRole::Labels:
      return "labels";
    case LayerRole::Hidden:
      return "hidden";
    case LayerRole::Cost:
      return "cost";
  }
  return "?";
}

const char* kind_name(OptionDecl::Kind kind) {
  switch (kind) {
    case OptionDecl::Kind::Int:
      return "int";
    case OptionDecl::Kind::Float:
      return "float";
    case OptionDecl::Kind::Bool:
      return "bool";
    case OptionDecl::Kind::String:
      return "string";
    case OptionDecl::Kind::Floats:
      return "floats";
  }
  return "?";
}

LayerType& LayerType::inputs(std::vector<std::string> names) {
  min_inputs_ = max_inputs_ = int(names.size());
  input_names_ = std::move(names);
  return *this;
}

LayerType& LayerType::inputs(int lo, int hi) {
  min_inputs_ = lo;
  max_inputs_ = hi;
  input_names_.clear();
  return *this;
}

LayerType& LayerType::option(std::string name, json fallback, std::string help) {
  const OptionDecl::Kind kind = fallback.is_boolean()          ? OptionDecl::Kind::Bool
                                : fallback.is_number_integer() ? OptionDecl::Kind::Int
                                : fallback.is_number()         ? OptionDecl::Kind::Float
                                : fallback.is_string()         ? OptionDecl::Kind::String
                                                               : OptionDecl::Kind::Floats;
  options_.push_back({std::move(name), kind, OptionDecl::Presence::Defaulted, std::move(fallback),
                      std::move(help)});
  return *this;
}

LayerType& LayerType::required(std::string name, OptionDecl::Kind kind, std::string help) {
  options_.push_back(
      {std::move(name), kind, OptionDecl::Presence::Required, json(), std::move(help)});
  return *this;
}

LayerType& LayerType::optional(std::string name, OptionDecl::Kind kind, std::string help) {
  options_.push_back(
      {std::move(name), kind, OptionDecl::Presence::Optional, json(), std::move(help)});
  return *this;
}

LayerType& LayerType::options(const std::vector<OptionDecl>& group) {
  options_.insert(options_.end(), group.begin(), group.end());
  return *this;
}

const OptionDecl* LayerType::find_option(const std::string& name) const {
  for (const OptionDecl& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

json LayerType::describe() const {
  json options = json::array();
  for (const OptionDecl& o : options_) {
    const char* presence = o.presence == OptionDecl::Presence::Required   ? "required"
                           : o.presence == OptionDecl::Presence::Optional ? "optional"
                                                                          : "defaulted";
    options.push_back({{"name", o.name},
                       {"kind", kind_name(o.kind)},
                       {"presence", presence},
                       {"default", o.fallback},
                       {"help", o.help}});
  }
  return {{"name", name_},
          {"help", help_},
          {"role", role_name(role_)},
          {"classifies", classifies_},
          {"min_inputs", min_inputs_},
          {"max_inputs", max_inputs_},
          {"input_names", input_names_},
          {"options", options}};
}

namespace {
std::map<std::string, LayerType>& registry() {
  static std::map<std::string, LayerType> r;  // built before main, read-only after
  return r;
}
}  // namespace

// What is wrong with a declaration, or nullptr.
static const char* declaration_problem(const LayerType& type) {
  if (!type.factory()) return "has no factory (end it with .make<Layer>())";
  if (registry().count(type.name())) return "is registered twice";
  if (type.is_classifier() && type.role() != LayerRole::Cost) return "classifies but is no cost";
  if (is_filled_from_outside(type.role()) && type.input_count().second != 0)
    return "is filled from outside but takes inputs";
  return nullptr;
}

LayerRegistration::LayerRegistration(const LayerType& type) {
  // A broken declaration is a bug in the engine, found the moment any program starts.
  if (const char* problem = declaration_problem(type)) {
    std::fprintf(stderr, "convnet: layer type '%s' %s\n", type.name().c_str(), problem);
    std::abort();
  }
  registry().emplace(type.name(), type);
}

std::vector<const LayerType*> registered_layer_types() {
  std::vector<const LayerType*> out;
  for (const auto& [name, type] : registry()) out.push_back(&type);
  return out;
}

const LayerType* find_layer_type(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

}  // namespace convnet

#include "convnet/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "convnet/error.h"
#include "convnet/named_params.h"

namespace convnet {

namespace {

// Every schedule type with its parameters and their defaults. warmup is common to all.
const std::map<std::string, std::map<std::string, double>>& defaults() {
  static const std::map<std::string, std::map<std::string, double>> d = {
      {"constant", {}},
      {"step", {{"every", 10}, {"factor", 0.1}}},
      {"exp", {{"tgtFactor", 100}}},
      {"dexp", {{"tgtFactor", 250}, {"numSteps", 4}}},
      {"linear", {{"tgtFactor", 10}}},
      {"plateau", {{"factor", 0.1}, {"patience", 2}, {"threshold", 0}, {"maxDrops", 3}}},
  };
  return d;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

std::string known_types() {
  std::string out;
  for (auto& [name, _] : defaults()) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void check_range(const std::string& text, const std::string& key, double v, bool ok,
                 const char* what) {
  CONVNET_CHECK(ok, "learning-rate schedule '", text, "': ", key, "=", v, " must be ", what);
}

}  // namespace

Schedule Schedule::parse(const std::string& text) {
  const NamedParams spec = parse_named_params(text, "learning-rate schedule");
  const std::string t = trim(text);
  Schedule s;
  s.type_ = spec.name;
  auto d = defaults().find(s.type_);
  CONVNET_CHECK(d != defaults().end(), "unknown learning-rate schedule '", t, "' (known: ",
                known_types(), ")");
  s.params_ = d->second;
  s.params_["warmup"] = 0;
  for (const auto& [key, value] : spec.params) {
    auto p = s.params_.find(key);
    if (p == s.params_.end()) {
      std::string keys;
      for (auto& [k, _] : s.params_) keys += (keys.empty() ? "" : ", ") + k;
      throw ValueError("learning-rate schedule '" + t + "': unknown key '" + key + "' for " +
                       s.type_ + " (known: " + keys + ")");
    }
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    CONVNET_CHECK(!value.empty() && end && *end == '\0' && std::isfinite(v),
                  "learning-rate schedule '", t, "': ", key, "='", value, "' is not a number");
    p->second = v;
  }
  for (auto& [k, v] : s.params_) {
    if (k == "tgtFactor") check_range(t, k, v, v > 0, "> 0");
    if (k == "factor") check_range(t, k, v, v > 0, "> 0");
    if (k == "every") check_range(t, k, v, v > 0, "> 0 epochs");
    if (k == "numSteps") check_range(t, k, v, v >= 2 && v == std::floor(v), "an integer >= 2");
    if (k == "patience" || k == "maxDrops")
      check_range(t, k, v, v >= 0 && v == std::floor(v), "an integer >= 0");
    if (k == "threshold") check_range(t, k, v, v >= 0 && v < 1, "in [0, 1)");
    if (k == "warmup") check_range(t, k, v, v >= 0, ">= 0 epochs");
  }
  return s;
}

double Schedule::param(const std::string& key) const {
  auto p = params_.find(key);
  return p == params_.end() ? 0.0 : p->second;
}

double Schedule::multiplier(double epoch, double total_epochs) const {
  const double progress = total_epochs > 0 ? std::clamp(epoch / total_epochs, 0.0, 1.0) : 0.0;
  double m = 1.0;
  if (type_ == "step") {
    m = std::pow(param("factor"), std::floor(epoch / param("every")));
  } else if (type_ == "exp") {
    m = std::pow(param("tgtFactor"), -progress);
  } else if (type_ == "dexp") {
    // numSteps levels, from 1 down to 1/tgtFactor, each held for an equal part of the run.
    const int steps = int(param("numSteps"));
    const int level = std::min(steps - 1, int(progress * steps));
    m = std::pow(param("tgtFactor"), -double(level) / (steps - 1));
  } else if (type_ == "linear") {
    m = (1 - progress) + progress / param("tgtFactor");
  } else if (type_ == "plateau") {
    m = std::pow(param("factor"), drops_);
  }
  const double warmup = param("warmup");
  if (warmup > 0 && epoch < warmup) m *= epoch / warmup;
  return m;
}

bool Schedule::observe_validation(double error) {
  if (type_ != "plateau") return false;
  if (error < best_error_ * (1 - param("threshold"))) {
    best_error_ = error;
    bad_tests_ = 0;
    return false;
  }
  if (++bad_tests_ < int(param("patience")) || drops_ >= int(param("maxDrops"))) return false;
  ++drops_;
  bad_tests_ = 0;  // the new rate gets `patience` tests to beat the best error so far
  return true;
}

std::string Schedule::text() const {
  std::ostringstream out;
  out << type_;
  if (!params_.empty()) {
    out << '[';
    bool first = true;
    for (auto& [k, v] : params_) {
      out << (first ? "" : ";") << k << '=' << v;
      first = false;
    }
    out << ']';
  }
  return out.str();
}

nlohmann::json Schedule::state() const {
  return {{"text", text()}, {"best_error", best_error_}, {"bad_tests", bad_tests_}, {"drops", drops_}};
}

void Schedule::load_state(const nlohmann::json& state) {
  try {
    best_error_ = state.at("best_error").get<double>();
    bad_tests_ = state.at("bad_tests").get<int>();
    drops_ = state.at("drops").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(std::string("schedule state in the checkpoint is malformed: ") + e.what());
  }
}

}  // namespace convnet

// Reading cuda-convnet2's layers-*.cfg with its layer-params-*.cfg into a ModelSpec. The meaning
// of each key is cuda-convnet2's (its layer.py parsers); docs/MODEL_FILES.md lists the mapping.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "convnet/cuda_convnet_cfg.h"
#include "convnet/error.h"
#include "convnet/named_params.h"
#include "convnet/ops.h"
#include "core/ini_file.h"

namespace convnet {

using nlohmann::json;

std::string cuda_convnet_params_path(const std::string& layers_path) {
  const std::filesystem::path p(layers_path);
  const std::string file = p.filename().string();
  if (file.rfind("layers-", 0) != 0) return "";
  return (p.parent_path() / ("layer-params-" + file.substr(7))).string();
}

bool is_cuda_convnet_cfg(const std::string& path) {
  return std::filesystem::path(path).extension() == ".cfg";
}

namespace {

// One layer's keys from both files, each remembering where it was written and whether a reader
// asked for it: a key nobody asks for is one convnet does not understand.
class Section {
 public:
  struct Key {
    std::string written, value, file;
    int line = 0;
    bool used = false;
  };

  Section(const IniSection& layers, const std::string& layers_file, const IniSection* params,
          const std::string& params_file)
      : name_(layers.name), file_(layers_file) {
    for (const IniEntry& e : layers.entries) keys_[lower(e.key)] = {e.key, e.value, layers_file, e.line};
    if (!params) return;
    for (const IniEntry& e : params->entries) {
      auto it = keys_.find(lower(e.key));
      if (it != keys_.end())
        throw ValueError(params_file + ":" + std::to_string(e.line) + ": section [" + name_ + "], key '" +
                         e.key + "': also given in " + it->second.file + " (line " +
                         std::to_string(it->second.line) + "); give it once");
      keys_[lower(e.key)] = {e.key, e.value, params_file, e.line};
    }
  }

  const std::string& name() const { return name_; }

  // "<file>:<line>: section [name], key 'key'" (the section's file and line for a missing key).
  std::string where(const std::string& key) const {
    auto it = keys_.find(lower(key));
    if (it == keys_.end()) return file_ + ": section [" + name_ + "], key '" + key + "'";
    return it->second.file + ":" + std::to_string(it->second.line) + ": section [" + name_ + "], key '" +
           it->second.written + "'";
  }
  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw ValueError(where(key) + ": " + message);
  }

  bool has(const std::string& key) {
    auto it = keys_.find(lower(key));
    if (it == keys_.end()) return false;
    it->second.used = true;
    return true;
  }
  std::string get(const std::string& key) {
    if (!has(key)) fail(key, "missing (cuda-convnet2 requires it for this layer type)");
    return keys_.at(lower(key)).value;
  }
  std::string get(const std::string& key, const std::string& fallback) {
    return has(key) ? keys_.at(lower(key)).value : fallback;
  }

  // Through the model's one range check (option_int): int(strtol) would wrap 4294967300 to 4.
  int to_int(const std::string& key, const std::string& text) const {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') fail(key, "'" + text + "' is not an integer");
    if (errno == ERANGE) return option_int(std::numeric_limits<int64_t>::max(), where(key), text);
    return option_int(v, where(key));
  }
  double to_float(const std::string& key, const std::string& text) const {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(v)) fail(key, "'" + text + "' is not a number");
    return v;
  }
  int get_int(const std::string& key) { return to_int(key, get(key)); }
  int get_int(const std::string& key, int fallback) { return has(key) ? get_int(key) : fallback; }
  double get_float(const std::string& key) { return to_float(key, get(key)); }
  double get_float(const std::string& key, double fallback) { return has(key) ? get_float(key) : fallback; }
  bool get_bool(const std::string& key, bool fallback) {
    if (!has(key)) return fallback;
    const std::string v = lower(get(key));
    if (v == "1" || v == "true") return true;
    if (v == "0" || v == "false") return false;
    fail(key, "'" + v + "' is not a boolean (1, 0, true or false)");
  }

  // A comma-separated list of one item or `n` (one per input); a single item stands for all,
  // as cuda-convnet2 expands it.
  std::vector<std::string> list(const std::string& key, size_t n) {
    std::vector<std::string> items = split_commas(get(key));
    if (items.size() == 1) items.resize(n, items[0]);
    if (items.size() != n)
      fail(key, "a list of " + std::to_string(items.size()) + " values for " + std::to_string(n) +
                    " inputs (give one value, or one per input)");
    return items;
  }
  // A per-input list whose values convnet must keep as one (it joins the inputs into one weight
  // matrix): all equal, else an error.
  std::string one_of_list(const std::string& key, size_t n) {
    const std::vector<std::string> items = list(key, n);
    for (const std::string& v : items)
      if (v != items[0])
        fail(key, "different values per input (" + get(key) +
                      "); convnet joins a layer's inputs into one weight matrix and keeps one value");
    return items[0];
  }
  int one_int(const std::string& key, size_t n, int fallback) {
    return has(key) ? to_int(key, one_of_list(key, n)) : fallback;
  }
  double one_float(const std::string& key, size_t n, double fallback) {
    return has(key) ? to_float(key, one_of_list(key, n)) : fallback;
  }
  std::vector<int> ints(const std::string& key, size_t n) {
    std::vector<int> out;
    for (const std::string& v : list(key, n)) out.push_back(to_int(key, v));
    return out;
  }

  // The first key no reader asked for.
  void reject_unread(const std::string& type) const {
    for (const auto& [k, v] : keys_)
      if (!v.used)
        throw ValueError(v.file + ":" + std::to_string(v.line) + ": section [" + name_ + "], key '" +
                         v.written + "': not a key of cuda-convnet2's '" + type +
                         "' layers that convnet reads (docs/MODEL_FILES.md lists them)");
  }

 private:
  std::string name_, file_;
  std::map<std::string, Key> keys_;
};

// What the reader knows of a layer already read: its name in the net (a detached neuron renames
// it), its output's channels and side, and its GPUs.
struct Made {
  std::string name;
  int channels = 0, size = 0;
  std::vector<int> gpus;
  enum class Kind { Data, Labels, Softmax, Other } kind = Kind::Other;
  std::string softmax_input;  // for Softmax: the layer it normalises
  size_t index = 0;           // into the layers' JSON (Data: channels are filled in later)
};

class Reader {
 public:
  Reader(const IniFile& layers, const IniFile& params, int input_size)
      : layers_(layers), params_(params), input_size_(input_size) {}

  ModelSpec read() {
    for (const IniSection& p : params_.sections)
      CONVNET_CHECK(layers_.find(p.name), params_.name, ":", p.line, ": section [", p.name,
                    "] names no layer of ", layers_.name);
    CONVNET_CHECK(!layers_.sections.empty(), layers_.name, ": no [section]s (a layers file has one per layer)");
    for (const IniSection& s : layers_.sections) {
      Section section(s, layers_.name, params_.find(s.name), params_.name);
      const std::string type = section.get("type");
      read_layer(section, type);
      section.reject_unread(type);
    }
    for (const auto& [name, made] : made_) {
      if (made.kind != Made::Kind::Data) continue;
      CONVNET_CHECK(made.channels > 0, layers_.name, ": section [", name,
                    "]: no layer that reads it says its channels (cuda-convnet2 takes them from the "
                    "first conv/local/pool layer's channels=)");
      layers_json_[made.index]["channels"] = made.channels;
    }
    for (const auto& [name, made] : made_)
      CONVNET_CHECK(made.kind != Made::Kind::Softmax || consumed_softmax_.count(name), layers_.name,
                    ": section [", name, "]: a softmax layer must feed a cost.logreg layer (convnet's "
                    "softmax lives in its softmax_cost layer)");
    return ModelSpec::from_json(json{{"layers", layers_json_}}.dump());
  }

 private:
  void read_layer(Section& s, const std::string& type) {
    CONVNET_CHECK(!made_.count(s.name()), s.where("type"), ": a layer named '", s.name(), "' exists already");
    if (type == "data") return read_data(s);
    const std::vector<std::string> inputs = input_names(s);
    if (type == "conv" || type == "local") return read_filter_layer(s, type, inputs);
    if (type == "fc") return read_fc(s, inputs);
    if (type == "pool") return read_pool(s, inputs);
    if (type == "cmrnorm" || type == "rnorm") return read_norm(s, type, inputs);
    if (type == "dropout" || type == "dropout2") return read_dropout(s, type, inputs);
    if (type == "pass" || type == "concat") return read_concat(s, inputs);
    if (type == "eltsum") return read_eltsum(s, inputs);
    if (type == "neuron") return read_neuron_layer(s, inputs);
    if (type == "softmax") return read_softmax(s, inputs);
    if (type == "cost.logreg") return read_logreg(s, inputs);
    s.fail("type", "unknown or unsupported layer type '" + type +
                       "' (convnet reads data, conv, local, fc, pool, cmrnorm, rnorm, dropout, dropout2, "
                       "pass, concat, eltsum, neuron, softmax, cost.logreg)");
  }

  // ---- what every layer with inputs shares ----
  std::vector<std::string> input_names(Section& s) {
    const std::vector<std::string> names = split_commas(s.get("inputs"));
    for (const std::string& name : names) {
      if (!made_.count(name)) {
        const bool later = layers_.find(name) != nullptr;
        s.fail("inputs", "'" + name + "' is " +
                             (later ? "defined below this layer (a layer's inputs must come above it; "
                                      "a cycle?)"
                                    : "not a layer of the file"));
      }
    }
    return names;
  }
  const Made& input(const std::string& name) const { return made_.at(name); }
  // The net's names of the inputs (a detached neuron stands for its layer).
  std::vector<std::string> net_inputs(Section& s, const std::vector<std::string>& inputs) {
    std::vector<std::string> out;
    for (const std::string& n : inputs) {
      const Made& m = input(n);
      if (m.kind == Made::Kind::Softmax)
        s.fail("inputs", "'" + n + "' is a softmax layer; only a cost.logreg may read it in convnet");
      out.push_back(m.name);
    }
    return out;
  }
  // gpu=: a list; absent: the first input's (cuda-convnet2's default).
  std::vector<int> gpus(Section& s, const std::vector<std::string>& inputs) {
    if (!s.has("gpu")) return inputs.empty() || input(inputs[0]).gpus.empty() ? std::vector<int>{0} : input(inputs[0]).gpus;
    std::vector<int> g;
    for (const std::string& item : split_commas(s.get("gpu"))) {
      const int v = s.to_int("gpu", item);
      if (v < 0) s.fail("gpu", "GPU indices must be >= 0");
      for (int seen : g)
        if (seen == v) s.fail("gpu", "GPU " + std::to_string(v) + " twice (replicas run on different GPUs)");
      g.push_back(v);
    }
    return g;
  }
  static json device_json(const std::vector<int>& g) {
    return g.size() == 1 ? json(g[0]) : json(g);
  }
  json base(Section& s, const std::string& type, const std::vector<std::string>& inputs) {
    json l = {{"name", s.name()}, {"type", type}, {"inputs", net_inputs(s, inputs)}};
    l["device"] = device_json(gpus(s, inputs));
    return l;
  }
  Made& add(Section& s, json layer, int channels, int size, const std::vector<int>& g) {
    Made m;
    m.name = layer["name"].get<std::string>();
    m.channels = channels;
    m.size = size;
    m.gpus = g;
    m.index = layers_json_.size();
    layers_json_.push_back(std::move(layer));
    made_[s.name()] = m;
    return made_[s.name()];
  }
  // The input's channels must be what the section says (channels= is cuda-convnet2's check of
  // the layer's shapes); a data layer learns its channels from its first reader.
  void check_channels(Section& s, const std::vector<std::string>& inputs, const std::vector<int>& channels) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      Made& m = made_.at(inputs[i]);
      if (m.kind == Made::Kind::Data && m.channels == 0) m.channels = channels[i];
      if (channels[i] != m.channels)
        s.fail("channels", "says " + std::to_string(channels[i]) + " for input '" + inputs[i] + "', which has " +
                               std::to_string(m.channels) + " channels");
    }
  }
  int same_size(Section& s, const std::vector<std::string>& inputs) {
    for (const std::string& n : inputs)
      if (input(n).size != input(inputs[0]).size)
        s.fail("inputs", "'" + n + "' is " + std::to_string(input(n).size) + "x" + std::to_string(input(n).size) +
                             " but '" + inputs[0] + "' is " + std::to_string(input(inputs[0]).size) + "x" +
                             std::to_string(input(inputs[0]).size) + " (joined inputs must share their size)");
    return input(inputs[0]).size;
  }

  // neuron=: fused into conv/local/fc; other layers get a neuron layer after them, named as
  // cuda-convnet2 names the one it detaches (<name>_neuron).
  std::string neuron_name(Section& s) {
    const std::string n = lower(s.get("neuron", ""));
    if (n.empty() || n == "ident" || n == "linear[1,0]") return "linear";
    if (n == "relu" || n == "logistic") return n;
    if (n == "tanh[1,1]") return "tanh";
    s.fail("neuron", "'" + n + "' has no convnet equivalent (convnet reads relu, logistic, ident, tanh[1,1])");
  }
  void detach_neuron(Section& s, Made& made) {
    const std::string neuron = neuron_name(s);
    if (neuron == "linear") return;
    std::string name = s.name() + "_neuron";
    for (int i = 1; made_.count(name) || layers_.find(name); ++i) name = s.name() + "_neuron." + std::to_string(i);
    json l = {{"name", name}, {"type", "neuron"}, {"inputs", {made.name}}, {"neuron", neuron},
              {"device", device_json(made.gpus)}};
    made.name = name;
    layers_json_.push_back(std::move(l));
  }

  // epsW/epsB (a rate or a schedule), momW/momB, wc, wball, updatePeriod: the params file's part
  // of a layer with weights.
  void learning(Section& s, size_t inputs, json& l) {
    rate(s, "epsW", s.one_of_list("epsW", inputs), l, "epsW", "scheduleW");
    rate(s, "epsB", s.one_of_list("epsB", 1), l, "epsB", "scheduleB");
    l["momW"] = s.to_float("momW", s.one_of_list("momW", inputs));
    l["momB"] = s.get_float("momB");
    l["wc"] = s.one_float("wc", inputs, 0.0);  // cuda-convnet2's default; convnet's is 0.0005
    l["wcB"] = 0.0;                            // cuda-convnet2 has no decay of biases
    if (s.one_float("wball", inputs, 0.0) != 0.0)
      s.fail("wball", "cuda-convnet2's weight-ball term has no convnet equivalent (only 0 is read)");
    const int period = s.get_int("updatePeriod", 0);
    if (period < 0) s.fail("updatePeriod", "must be >= 0");
    l["updatePeriod"] = period;
  }
  // A number, or const/linear/exp/dexp[base=...;...]: the base is the rate, the rest the
  // parameter's own schedule (convnet/schedule.h has the same linear, exp and dexp).
  void rate(Section& s, const std::string& key, const std::string& text, json& l, const char* eps,
            const char* schedule) {
    if (text.find('[') == std::string::npos) {
      l[eps] = s.to_float(key, text);
      if (l[eps].get<double>() < 0) s.fail(key, "a learning rate must be >= 0");
      return;
    }
    NamedParams p;
    try {
      p = parse_named_params(text, key);
    } catch (const ValueError& e) {
      s.fail(key, e.what());
    }
    if (p.name != "const" && p.name != "linear" && p.name != "exp" && p.name != "dexp")
      s.fail(key, "unknown schedule '" + p.name + "' (cuda-convnet2 has const, linear, exp, dexp)");
    std::string rest;
    bool has_base = false;
    for (const auto& [k, v] : p.params) {
      if (k == "base") {
        l[eps] = s.to_float(key, v);
        has_base = true;
      } else if ((k == "tgtFactor" && p.name != "const") || (k == "numSteps" && p.name == "dexp")) {
        rest += (rest.empty() ? "" : ";") + k + "=" + v;
      } else {
        s.fail(key, "'" + k + "' is not a parameter of " + p.name + " schedules");
      }
    }
    if (!has_base) s.fail(key, p.name + "[...] needs base=");
    if (p.name != "const") l[schedule] = p.name + "[" + rest + "]";
  }
  void init(Section& s, size_t inputs, json& l, bool weights_need_init) {
    l["init"] = "gaussian";
    l["initW"] = weights_need_init ? s.to_float("initW", s.one_of_list("initW", inputs)) : s.one_float("initW", inputs, 0.01);
    l["initB"] = s.get_float("initB", 0.0);
  }

  // ---- the layer types ----
  void read_data(Section& s) {
    const int idx = s.get_int("dataIdx");
    json l = {{"name", s.name()}};
    Made m;
    m.name = s.name();
    if (idx == 0) {
      if (input_size_ <= 0)
        s.fail("dataIdx", "cuda-convnet2 takes the image size from its data provider: give it (convnet "
                          "summary/convert --size N, or the data set's when training)");
      l["type"] = "input";
      l["size"] = input_size_;
      m.kind = Made::Kind::Data;
      m.size = input_size_;
    } else if (idx == 1) {
      l["type"] = "labels";
      m.kind = Made::Kind::Labels;
    } else {
      s.fail("dataIdx", "convnet reads dataIdx=0 (the images) and dataIdx=1 (the labels), not " +
                            std::to_string(idx));
    }
    m.index = layers_json_.size();
    layers_json_.push_back(std::move(l));
    made_[s.name()] = m;
  }

  void read_filter_layer(Section& s, const std::string& type, const std::vector<std::string>& inputs) {
    const size_t n = inputs.size();
    for (const std::string& i : inputs)
      if (input(i).kind == Made::Kind::Labels) s.fail("inputs", "'" + i + "' holds labels, not images");
    check_channels(s, inputs, s.ints("channels", n));
    const int in_size = same_size(s, inputs);
    const int size = s.to_int("filterSize", s.one_of_list("filterSize", n));
    const int stride = s.one_int("stride", n, 1), padding = s.one_int("padding", n, 0);
    const int groups = s.one_int("groups", n, 1);
    // Per group there; the product checked again (each factor alone is in range).
    const int filters = option_int(int64_t(s.to_int("filters", s.one_of_list("filters", n))) * groups,
                                   s.where("filters") + " times groups=" + std::to_string(groups));
    if (size < 1 || stride < 1 || padding < 0 || groups < 1 || filters < 1)
      s.fail("filterSize", "need filterSize, stride, filters, groups >= 1 and padding >= 0");
    if (groups > 1 && n > 1)
      s.fail("groups", "groups with several inputs: cuda-convnet2 groups each input apart, convnet "
                       "groups the joined channels");
    if (type == "conv") {
      if (!s.get_bool("sharedBiases", true))
        s.fail("sharedBiases", "a convolution with a bias per position: use type=local");
      if (s.has("sumWidth") && s.get_int("sumWidth") < 1) s.fail("sumWidth", "must be >= 1");  // a speed knob
    }
    if (s.has("randSparse") && s.get_bool("randSparse", false))
      s.fail("randSparse", "random sparse connectivity has no convnet equivalent (only 0 is read)");
    // cuda-convnet2 rounds the output size up; modulesX= may set it (to the rounded-down size).
    const int span = in_size + 2 * padding - size;
    if (span < 0) s.fail("filterSize", "larger than the padded input (" + std::to_string(in_size + 2 * padding) + ")");
    const int up = 1 + (span + stride - 1) / stride, down = 1 + span / stride;
    const int modules = s.get_int("modulesX", 0) > 0 ? s.get_int("modulesX") : up;
    if (modules != up && modules != down)
      s.fail("modulesX", std::to_string(modules) + " is neither " + std::to_string(up) + " (rounded up) nor " +
                             std::to_string(down) + " (rounded down), the sizes convnet computes");
    json l = base(s, type, inputs);
    l["filters"] = filters;
    l["size"] = size;
    l["stride"] = stride;
    l["padding"] = padding;
    if (type == "conv") l["groups"] = groups;
    l["ceil"] = modules == up;
    l["neuron"] = neuron_name(s);
    init(s, n, l, true);
    learning(s, n, l);
    const std::vector<int> g = gpus(s, inputs);
    add(s, std::move(l), filters, modules, g);
  }

  void read_fc(Section& s, const std::vector<std::string>& inputs) {
    for (const std::string& i : inputs)
      if (input(i).kind == Made::Kind::Labels) s.fail("inputs", "'" + i + "' holds labels, not activations");
    const int outputs = s.get_int("outputs");
    if (outputs < 1) s.fail("outputs", "must be >= 1");
    json l = base(s, "fc", inputs);
    l["outputs"] = outputs;
    l["neuron"] = neuron_name(s);
    init(s, inputs.size(), l, false);
    learning(s, inputs.size(), l);
    add(s, std::move(l), outputs, 1, gpus(s, inputs));
  }

  void read_pool(Section& s, const std::vector<std::string>& inputs) {
    if (inputs.size() != 1) s.fail("inputs", "a pool layer has one input");
    check_channels(s, inputs, {s.get_int("channels")});
    const std::string kind = s.get("pool");
    if (kind != "max" && kind != "avg") s.fail("pool", "'" + kind + "': convnet pools max or avg");
    if (kind == "avg" && s.get_bool("sum", false)) s.fail("sum", "summing pools have no convnet equivalent");
    const int size = s.get_int("sizeX"), stride = s.get_int("stride"), start = s.get_int("start", 0);
    const int in = input(inputs[0]).size;
    if (size < 1 || stride < 1 || size > in) s.fail("sizeX", "need 1 <= sizeX <= the input's side and stride >= 1");
    if (start > 0) s.fail("start", "windows starting inside the image (start > 0) have no convnet equivalent");
    const int padding = -start;
    if (2 * padding > size) s.fail("start", "convnet pads a pool by at most sizeX/2");
    // cuda-convnet2: outputsX = 1 + ceil((in - start - sizeX) / stride), or as given.
    const int theirs = s.get_int("outputsX", 0) > 0 ? s.get_int("outputsX")
                                                    : 1 + (in + padding - size + stride - 1) / stride;
    PoolGeometry g;
    g.channels = input(inputs[0]).channels, g.height = g.width = in, g.batch = 1;
    g.size = size, g.stride = stride, g.padding = padding;
    int ours[2];
    for (int c = 0; c < 2; ++c) {
      g.ceil_mode = c == 1;
      g.finish(s.name());
      ours[c] = g.out_h;
    }
    if (theirs != ours[1] && theirs != ours[0])
      s.fail(s.has("outputsX") ? "outputsX" : "start",
             "cuda-convnet2's " + std::to_string(theirs) + " outputs are neither " + std::to_string(ours[1]) +
                 " nor " + std::to_string(ours[0]) + ", the sizes convnet computes for these windows");
    json l = base(s, "pool", inputs);
    l["pool"] = kind;
    l["size"] = size;
    l["stride"] = stride;
    l["ceil"] = theirs == ours[1];
    l["padding"] = padding;
    if (kind == "avg" && padding > 0) l["count_padding"] = false;  // cuda-convnet2 divides by the image's cells
    Made& m = add(s, std::move(l), input(inputs[0]).channels, theirs, gpus(s, inputs));
    detach_neuron(s, m);
  }

  void read_norm(Section& s, const std::string& type, const std::vector<std::string>& inputs) {
    if (inputs.size() != 1) s.fail("inputs", "a " + type + " layer has one input");
    check_channels(s, inputs, {s.get_int("channels")});
    const int size = s.get_int("size");
    if (size < 1) s.fail("size", "must be >= 1");
    if (s.get_bool("blocked", false)) s.fail("blocked", "blocked normalisation has no convnet equivalent");
    json l = base(s, type == "cmrnorm" ? "lrn" : "rnorm", inputs);
    l["size"] = size;
    // cuda-convnet2 divides scale by the window's cells: the coefficient of the sum is alpha.
    const double scale = s.get_float("scale");
    l["alpha"] = type == "cmrnorm" ? scale / size : scale / (double(size) * size);
    l["beta"] = s.get_float("pow");
    l["k"] = s.get_float("minDiv", 1.0);
    Made& m = add(s, std::move(l), input(inputs[0]).channels, input(inputs[0]).size, gpus(s, inputs));
    detach_neuron(s, m);
  }

  void read_dropout(Section& s, const std::string& type, const std::vector<std::string>& inputs) {
    if (inputs.size() != 1) s.fail("inputs", "a dropout layer has one input");
    const double keep = s.get_float("keep", 0.5);
    if (!(keep > 0 && keep <= 1)) s.fail("keep", "must be in (0, 1]");
    json l = base(s, "dropout", inputs);
    l["rate"] = 1.0 - keep;
    l["inverted"] = type == "dropout";
    l["enable"] = s.get_bool("enable", true);
    Made& m = add(s, std::move(l), input(inputs[0]).channels, input(inputs[0]).size, gpus(s, inputs));
    detach_neuron(s, m);
  }

  void read_concat(Section& s, const std::vector<std::string>& inputs) {
    int channels = 0;
    const int size = same_size(s, inputs);
    for (const std::string& i : inputs) channels += input(i).channels;
    Made& m = add(s, base(s, "concat", inputs), channels, size, gpus(s, inputs));
    detach_neuron(s, m);
  }

  void read_eltsum(Section& s, const std::vector<std::string>& inputs) {
    json l = base(s, "sum", inputs);
    const int size = same_size(s, inputs);
    for (const std::string& i : inputs)
      if (input(i).channels != input(inputs[0]).channels) s.fail("inputs", "summed inputs must have equal channels");
    if (s.has("coeffs")) {
      std::vector<double> c;
      for (const std::string& v : s.list("coeffs", inputs.size())) c.push_back(s.to_float("coeffs", v));
      l["coeffs"] = c;
    }
    Made& m = add(s, std::move(l), input(inputs[0]).channels, size, gpus(s, inputs));
    detach_neuron(s, m);
  }

  void read_neuron_layer(Section& s, const std::vector<std::string>& inputs) {
    if (inputs.size() != 1) s.fail("inputs", "a neuron layer has one input");
    json l = base(s, "neuron", inputs);
    if (!s.has("neuron")) s.fail("neuron", "missing");
    l["neuron"] = neuron_name(s);
    add(s, std::move(l), input(inputs[0]).channels, input(inputs[0]).size, gpus(s, inputs));
  }

  void read_softmax(Section& s, const std::vector<std::string>& inputs) {
    if (inputs.size() != 1) s.fail("inputs", "a softmax layer has one input");
    if (input(inputs[0]).size != 1) s.fail("inputs", "'" + inputs[0] + "' is not a vector per case (an fc layer's)");
    s.has("gpu");  // where the cost that absorbs it runs decides
    Made m;
    m.name = s.name();
    m.kind = Made::Kind::Softmax;
    m.softmax_input = inputs[0];
    m.channels = input(inputs[0]).channels;
    m.gpus = gpus(s, inputs);
    made_[s.name()] = m;
  }

  void read_logreg(Section& s, const std::vector<std::string>& inputs) {
    if (inputs.size() != 2) s.fail("inputs", "cost.logreg takes two inputs: the labels and the probabilities");
    if (input(inputs[0]).kind != Made::Kind::Labels)
      s.fail("inputs", "its first input '" + inputs[0] + "' must be a labels layer (dataIdx=1)");
    const Made& probs = input(inputs[1]);
    if (probs.kind != Made::Kind::Softmax)
      s.fail("inputs", "its second input '" + inputs[1] + "' must be a softmax layer (convnet computes the "
                       "softmax and this cost together)");
    if (consumed_softmax_.count(inputs[1])) s.fail("inputs", "softmax '" + inputs[1] + "' feeds two costs");
    consumed_softmax_.insert(inputs[1]);
    const Made& scores = input(probs.softmax_input);
    json l = {{"name", s.name()}, {"type", "softmax_cost"}, {"inputs", {scores.name, input(inputs[0]).name}},
              {"device", device_json(gpus(s, {inputs[1]}))}};
    l["coeff"] = s.get_float("coeff");
    const int topk = s.get_int("topk", 1);  // convnet always reports top-1 and top-5
    if (topk < 1 || topk > probs.channels)
      s.fail("topk", "must be in [1, " + std::to_string(probs.channels) + "], the classes");
    s.has("neuron");  // cuda-convnet2 drops a cost's neuron
    add(s, std::move(l), probs.channels, 1, gpus(s, {inputs[1]}));
  }

  const IniFile& layers_;
  const IniFile& params_;
  int input_size_;
  std::map<std::string, Made> made_;  // by section name
  std::set<std::string> consumed_softmax_;
  json layers_json_ = json::array();
};

}  // namespace

ModelSpec parse_cuda_convnet_cfg(const std::string& layers_text, const std::string& params_text,
                                 int input_size, const std::string& layers_name,
                                 const std::string& params_name) {
  const IniFile layers = IniFile::parse(layers_text, layers_name);
  const IniFile params = IniFile::parse(params_text, params_name);
  return Reader(layers, params, input_size).read();
}

ModelSpec read_cuda_convnet_cfg(const std::string& layers_path, const std::string& params_path,
                                int input_size) {
  CONVNET_CHECK(!params_path.empty(), "the layer-params file of '", layers_path,
                "' must be given (its name is not layers-X.cfg, so layer-params-X.cfg cannot be assumed)");
  const IniFile layers = IniFile::read(layers_path);
  const IniFile params = IniFile::read(params_path);
  return Reader(layers, params, input_size).read();
}

}  // namespace convnet

// Writing a ModelSpec as cuda-convnet2's layers-*.cfg and layer-params-*.cfg: the reverse of
// cuda_convnet_read.cpp, so that reading what this writes gives the same net.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "convnet/cuda_convnet_cfg.h"
#include "convnet/error.h"
#include "convnet/layer.h"
#include "convnet/named_params.h"
#include "convnet/net.h"

namespace convnet {

using nlohmann::json;

namespace {

// The shortest decimal that reads back as the same double (what Python's repr writes).
std::string number(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(int64_t(v));
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

class Writer {
 public:
  explicit Writer(const ModelSpec& spec)
      : spec_(spec), net_(spec, std::vector<Device>(size_t(spec.logical_devices()), Device::cpu())) {}

  CudaConvnetCfg write() {
    for (const LayerSpec& l : spec_.layers) write_layer(l, net_.layer(l.name).options_in_effect());
    return {layers_.str(), params_.str()};
  }

 private:
  [[noreturn]] void fail(const LayerSpec& l, const std::string& message) const {
    throw ValueError("layer '" + l.name + "' (" + l.type + "): " + message);
  }
  Shape shape(const std::string& layer) const { return net_.output_shape(layer); }

  std::ostringstream& section(std::ostringstream& out, const std::string& name) {
    if (out.tellp() > 0) out << "\n";
    out << "[" << name << "]\n";
    return out;
  }
  void head(const LayerSpec& l, const std::string& type, const std::vector<std::string>& inputs) {
    section(layers_, l.name) << "type=" << type << "\n";
    if (!inputs.empty()) {
      layers_ << "inputs=";
      for (size_t i = 0; i < inputs.size(); ++i) layers_ << (i ? "," : "") << inputs[i];
      layers_ << "\n";
    }
    gpu(l);
  }
  void gpu(const LayerSpec& l) {
    const std::vector<int> g = l.replicas.empty() ? std::vector<int>{l.device} : l.replicas;
    layers_ << "gpu=";
    for (size_t i = 0; i < g.size(); ++i) layers_ << (i ? "," : "") << g[i];
    layers_ << "\n";
  }
  void channels(const LayerSpec& l) {
    layers_ << "channels=";
    for (size_t i = 0; i < l.inputs.size(); ++i) layers_ << (i ? "," : "") << shape(l.inputs[i])[0];
    layers_ << "\n";
  }
  std::string neuron(const LayerSpec& l, const json& o) {
    const std::string n = o.value("neuron", "linear");
    if (n == "linear" || n == "ident") return "";
    if (n == "relu" || n == "logistic") return n;
    if (n == "tanh") return "tanh[1,1]";
    fail(l, "neuron '" + n + "' has no cuda-convnet2 equivalent (it has relu, logistic, tanh[1,1], ident)");
  }

  // epsW/epsB with the parameter's own schedule, momentum, decay: the params file's part.
  void learning(const LayerSpec& l, const json& o, int64_t fan_in) {
    if (!o.at("bias").get<bool>()) fail(l, "a layer without biases (bias=false) has no cuda-convnet2 equivalent");
    if (o.at("wcB").get<double>() != 0) fail(l, "cuda-convnet2 has no weight decay of biases (wcB)");
    const std::string init = o.at("init").get<std::string>();
    double init_w = o.at("initW").get<double>();
    if (init == "kaiming") init_w = std::sqrt(2.0 / double(fan_in));  // the std it draws with
    else if (init == "xavier") init_w = std::sqrt(1.0 / double(fan_in));
    layers_ << "initW=" << number(init_w) << "\n";
    if (o.at("initB").get<double>() != 0) layers_ << "initB=" << number(o.at("initB").get<double>()) << "\n";
    section(params_, l.name);
    params_ << "epsW=" << rate(l, o.at("epsW").get<double>(), o.at("scheduleW").get<std::string>()) << "\n";
    params_ << "epsB=" << rate(l, o.at("epsB").get<double>(), o.at("scheduleB").get<std::string>()) << "\n";
    params_ << "momW=" << number(o.at("momW").get<double>()) << "\n";
    params_ << "momB=" << number(o.at("momB").get<double>()) << "\n";
    params_ << "wc=" << number(o.at("wc").get<double>()) << "\n";
    if (o.at("updatePeriod").get<int>() > 1) params_ << "updatePeriod=" << o.at("updatePeriod").get<int>() << "\n";
  }
  std::string rate(const LayerSpec& l, double base, const std::string& schedule) {
    if (schedule.empty()) return number(base);
    const NamedParams p = parse_named_params(schedule, "schedule");  // as written (the net checked it)
    if (p.name == "constant") return number(base);
    if (p.name != "linear" && p.name != "exp" && p.name != "dexp")
      fail(l, "its schedule '" + schedule + "' has no cuda-convnet2 equivalent (it has linear, exp, dexp)");
    std::string out = p.name + "[base=" + number(base);
    for (const auto& [k, v] : p.params) {
      if (k == "warmup") {
        if (std::strtod(v.c_str(), nullptr) != 0) fail(l, "cuda-convnet2's schedules have no warmup");
        continue;
      }
      out += ";" + k + "=" + v;
    }
    return out + "]";
  }

  void write_layer(const LayerSpec& l, const json& o) {
    const std::string& t = l.type;
    if (t == "input" || t == "labels") {
      section(layers_, l.name) << "type=data\ndataIdx=" << (t == "input" ? data_index(l, images_) : data_index(l, labels_)) << "\n";
    } else if (t == "conv" || t == "local") {
      write_filter_layer(l, o);
    } else if (t == "fc") {
      head(l, "fc", l.inputs);
      layers_ << "outputs=" << o.at("outputs").get<int>() << "\n";
      if (const std::string n = neuron(l, o); !n.empty()) layers_ << "neuron=" << n << "\n";
      int64_t fan_in = 0;
      for (const std::string& i : l.inputs) fan_in += shape(i)[0] * shape(i)[1] * shape(i)[2];
      learning(l, o, fan_in);
    } else if (t == "pool") {
      write_pool(l, o);
    } else if (t == "lrn" || t == "rnorm") {
      head(l, t == "lrn" ? "cmrnorm" : "rnorm", l.inputs);
      channels(l);
      const int size = o.at("size").get<int>();
      layers_ << "size=" << size << "\n";
      section(params_, l.name) << "scale="
                               << number(o.at("alpha").get<double>() * (t == "lrn" ? size : double(size) * size))
                               << "\npow=" << number(o.at("beta").get<double>())
                               << "\nminDiv=" << number(o.at("k").get<double>()) << "\n";
    } else if (t == "dropout") {
      head(l, o.at("inverted").get<bool>() ? "dropout" : "dropout2", l.inputs);
      section(params_, l.name) << "enable=" << (o.at("enable").get<bool>() ? "true" : "false")
                               << "\nkeep=" << number(1.0 - o.at("rate").get<double>()) << "\n";
    } else if (t == "concat") {
      head(l, "concat", l.inputs);
    } else if (t == "sum") {
      head(l, "eltsum", l.inputs);
      if (!o.at("coeffs").is_null()) {
        layers_ << "coeffs=";
        for (size_t i = 0; i < o.at("coeffs").size(); ++i) layers_ << (i ? "," : "") << number(o.at("coeffs")[i].get<double>());
        layers_ << "\n";
      }
    } else if (t == "neuron") {
      head(l, "neuron", l.inputs);
      const std::string n = neuron(l, o);
      layers_ << "neuron=" << (n.empty() ? "ident" : n) << "\n";
    } else if (t == "softmax_cost") {
      // cuda-convnet2 writes the softmax apart: <cost>_probs, then the cost reading it.
      const std::string probs = l.name + "_probs";
      for (const LayerSpec& other : spec_.layers)
        if (other.name == probs) fail(l, "its softmax would be named '" + probs + "', which another layer is");
      section(layers_, probs) << "type=softmax\ninputs=" << l.inputs[0] << "\n";
      gpu(l);
      head(l, "cost.logreg", {l.inputs[1], probs});
      section(params_, l.name) << "coeff=" << number(o.at("coeff").get<double>()) << "\n";
    } else {
      fail(l, "cuda-convnet2 has no layer type for it");
    }
  }
  int data_index(const LayerSpec& l, int& count) {
    if (count++ > 0) fail(l, "a second " + l.type + " layer: cuda-convnet2's files have one data layer of each kind");
    return l.type == "input" ? 0 : 1;
  }

  void write_filter_layer(const LayerSpec& l, const json& o) {
    const bool conv = l.type == "conv";
    const int groups = conv ? o.at("groups").get<int>() : 1;
    if (groups > 1 && l.inputs.size() > 1)
      fail(l, "groups with several inputs: cuda-convnet2 would group each input apart");
    head(l, l.type, l.inputs);
    channels(l);
    const int filters = o.at("filters").get<int>(), size = o.at("size").get<int>();
    const int stride = o.at("stride").get<int>(), padding = o.at("padding").get<int>();
    layers_ << "filters=" << filters / groups << "\nfilterSize=" << size << "\nstride=" << stride
            << "\npadding=" << padding << "\n";
    if (groups > 1) layers_ << "groups=" << groups << "\n";
    const Shape in = shape(l.inputs[0]), out = shape(l.name);
    const int span = in[1] + 2 * padding - size;
    const int up = 1 + (span + stride - 1) / stride;
    if (out[1] != up) {  // rounded down: cuda-convnet2 takes the size, if the positions cover the image
      if (-padding + stride * (out[1] - 1) + size < in[1])
        fail(l, "its " + std::to_string(out[1]) + " positions (rounded down) leave the image's edge uncovered, "
                "which cuda-convnet2 refuses");
      layers_ << "modulesX=" << out[1] << "\n";
    }
    if (conv) layers_ << "sharedBiases=1\nsumWidth=4\n";  // sumWidth: a speed knob cuda-convnet2 requires
    if (const std::string n = neuron(l, o); !n.empty()) layers_ << "neuron=" << n << "\n";
    int64_t channels = 0;
    for (const std::string& i : l.inputs) channels += shape(i)[0];
    learning(l, o, channels / groups * size * size);
  }

  void write_pool(const LayerSpec& l, const json& o) {
    head(l, "pool", l.inputs);
    channels(l);
    const std::string kind = o.at("pool").get<std::string>();
    const int size = o.at("size").get<int>(), padding = o.at("padding").get<int>();
    const int stride = o.at("stride").is_null() ? size : o.at("stride").get<int>();
    if (kind == "avg" && padding > 0 && o.at("count_padding").get<bool>())
      fail(l, "average pooling that counts padded cells (count_padding=true): cuda-convnet2 divides by the "
              "image's cells only");
    layers_ << "pool=" << kind << "\nsizeX=" << size << "\nstride=" << stride << "\n";
    if (padding > 0) layers_ << "start=" << -padding << "\n";
    const int in = shape(l.inputs[0])[1], out = shape(l.name)[1];
    if (out != 1 + (in + padding - size + stride - 1) / stride) layers_ << "outputsX=" << out << "\n";
  }

  const ModelSpec& spec_;
  Net net_;  // the shapes
  std::ostringstream layers_, params_;
  int images_ = 0, labels_ = 0;
};

}  // namespace

CudaConvnetCfg write_cuda_convnet_cfg(const ModelSpec& spec) {
  CudaConvnetCfg cfg = Writer(spec).write();
  const std::string note = "# written by convnet (docs/MODEL_FILES.md)\n\n";
  cfg.layers = note + cfg.layers;
  cfg.params = note + cfg.params;
  return cfg;
}

}  // namespace convnet

// Parsing and validation of the op parameter structs of convnet/ops.h.
#include "convnet/error.h"
#include "convnet/ops.h"

namespace convnet {

Neuron Neuron::parse(const std::string& name) {
  Neuron n;
  if (name == "linear" || name == "ident" || name.empty()) n.type = NeuronType::Linear;
  else if (name == "relu") n.type = NeuronType::Relu;
  else if (name == "leaky_relu" || name == "lrelu") n.type = NeuronType::LeakyRelu;
  else if (name == "tanh") n.type = NeuronType::Tanh;
  else if (name == "logistic" || name == "sigmoid") n.type = NeuronType::Logistic;
  else if (name == "softsign") n.type = NeuronType::Softsign;
  else
    throw ValueError("unknown neuron '" + name +
                     "' (expected linear, relu, leaky_relu, tanh, logistic or softsign)");
  return n;
}

std::string Neuron::name() const {
  switch (type) {
    case NeuronType::Linear: return "linear";
    case NeuronType::Relu: return "relu";
    case NeuronType::LeakyRelu: return "leaky_relu";
    case NeuronType::Tanh: return "tanh";
    case NeuronType::Logistic: return "logistic";
    case NeuronType::Softsign: return "softsign";
  }
  return "?";
}

void ConvGeometry::finish(const std::string& who) {
  CONVNET_CHECK(channels > 0 && height > 0 && width > 0 && batch > 0, who,
                ": input must be non-empty, got channels=", channels, " height=", height,
                " width=", width, " batch=", batch);
  CONVNET_CHECK(filters > 0 && size > 0 && stride > 0 && pad >= 0 && groups > 0, who,
                ": need filters > 0, size > 0, stride > 0, padding >= 0, groups > 0 (got filters=",
                filters, " size=", size, " stride=", stride, " padding=", pad, " groups=", groups, ")");
  CONVNET_CHECK(channels % groups == 0, who, ": ", channels,
                " input channels do not divide into ", groups, " groups");
  CONVNET_CHECK(filters % groups == 0, who, ": ", filters, " filters do not divide into ", groups,
                " groups");
  CONVNET_CHECK(height + 2 * pad >= size && width + 2 * pad >= size, who, ": filter size ", size,
                " is larger than the padded input ", height + 2 * pad, "x", width + 2 * pad);
  const int round_up = ceil_mode ? stride - 1 : 0;
  out_h = (height + 2 * pad - size + round_up) / stride + 1;
  out_w = (width + 2 * pad - size + round_up) / stride + 1;
}

static int pool_out(int in, int size, int stride, int padding, bool ceil_mode) {
  int span = in + 2 * padding - size;
  int out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // The last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * stride >= in + padding) --out;
  return out;
}

void PoolGeometry::finish(const std::string& who) {
  CONVNET_CHECK(channels > 0 && height > 0 && width > 0 && batch > 0, who,
                ": input must be non-empty, got channels=", channels, " height=", height,
                " width=", width, " batch=", batch);
  CONVNET_CHECK(size > 0 && stride > 0, who, ": need pool size > 0 and stride > 0 (got size=", size,
                " stride=", stride, ")");
  CONVNET_CHECK(padding >= 0 && 2 * padding <= size, who, ": pool padding must be in [0, size/2] (",
                size / 2, " for size ", size, "), got ", padding);
  CONVNET_CHECK(height + 2 * padding >= size && width + 2 * padding >= size, who, ": pool size ", size,
                " is larger than the input ", height, "x", width,
                padding ? " with its padding of " + std::to_string(padding) : std::string());
  out_h = pool_out(height, size, stride, padding, ceil_mode);
  out_w = pool_out(width, size, stride, padding, ceil_mode);
}

}  // namespace convnet

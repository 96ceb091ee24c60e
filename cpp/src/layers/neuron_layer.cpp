// A standalone neuron (activation function) layer; conv and fc layers fuse theirs instead.
#include "convnet/layer.h"
#include "convnet/ops.h"

namespace convnet {

namespace {

class NeuronLayer : public Layer {
 public:
  explicit NeuronLayer(const LayerSpec& spec) : Layer(spec) {
    neuron_ = read_neuron();
  }
  Shape setup(const std::vector<Shape>& in) override { return in[0]; }
  void forward(const std::vector<Tensor>& in, Tensor& out, const PassContext&) override {
    neuron_forward(in[0], out, neuron_);
  }
  void backward(const std::vector<Tensor>&, const Tensor& out, const Tensor& dout,
                std::vector<Tensor>& din, const std::vector<bool>& accumulate,
                const PassContext&) override {
    if (din[0].defined()) neuron_backward(out, dout, din[0], neuron_, accumulate[0]);
  }

 private:
  Neuron neuron_;
};

}  // namespace

CONVNET_REGISTER_LAYER(
    LayerType("neuron", "an activation function on its own (conv and fc fuse theirs)")
        .options(neuron_options("relu"))
        .make<NeuronLayer>());

}  // namespace convnet

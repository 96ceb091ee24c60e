// A standalone neuron (activation function) layer; conv and fc layers fuse theirs instead.
#include "convnet/ops.h"
#include "layers/factories.h"

namespace convnet {

namespace {

class NeuronLayer : public Layer {
 public:
  explicit NeuronLayer(const LayerSpec& spec) : Layer(spec) {
    neuron_ = read_neuron("relu");
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

std::unique_ptr<Layer> make_neuron_layer(const LayerSpec& s) { return std::make_unique<NeuronLayer>(s); }

}  // namespace convnet

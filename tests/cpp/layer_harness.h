// Runs one layer on its own, on the CPU: build from a JSON spec, set inputs and parameters,
// forward, backward. Used by the layer tests to compare against float64 references.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "convnet/layer.h"
#include "test_util.h"

namespace convnet::testing {

struct LayerHarness {
  std::unique_ptr<Layer> layer;
  Workspace workspace{Device::cpu()};
  std::vector<Tensor> in;
  Tensor out;
  Shape out_shape;

  LayerHarness(const std::string& json_options, const std::vector<Shape>& in_shapes,
               uint32_t seed) {
    auto spec = ModelSpec::from_json("[" + json_options + "]").layers.at(0);
    layer = make_layer(spec);
    out_shape = layer->setup(in_shapes);
    layer->place(Device::cpu(), &workspace);
    for (size_t i = 0; i < in_shapes.size(); ++i) {
      Tensor t(in_shapes[i], Device::cpu());
      t.copy_from_host(random_vector(size_t(t.numel()), seed + 17 * uint32_t(i)).data());
      in.push_back(t);
    }
    for (size_t i = 0; i < layer->params().size(); ++i) {
      Tensor& v = layer->params()[i].value;
      v.copy_from_host(random_vector(size_t(v.numel()), seed + 1000 + uint32_t(i), -0.5f, 0.5f).data());
    }
    out = Tensor(out_shape, Device::cpu());
    out.fill(std::nanf(""));  // poison: every element must be written
  }

  void forward(bool train = true) { layer->forward(in, out, PassContext{train, 1, 0}); }

  // Backward with upstream gradient dout; returns the input gradients (overwritten).
  std::vector<std::vector<float>> backward(const std::vector<float>& dout) {
    Tensor d(out_shape, Device::cpu());
    d.copy_from_host(dout.data());
    std::vector<Tensor> din;
    for (const Tensor& t : in) {
      Tensor g(t.shape(), Device::cpu());
      g.fill(std::nanf(""));
      din.push_back(g);
    }
    layer->backward(in, out, d, din, std::vector<bool>(in.size(), false), PassContext{true, 1, 0});
    std::vector<std::vector<float>> result;
    for (const Tensor& g : din) result.push_back(g.to_vector());
    return result;
  }
};

}  // namespace convnet::testing

// One factory per layer type, each defined in the layer's own file; layer.cpp registers them.
#pragma once
#include <memory>

#include "convnet/layer.h"

namespace convnet {
std::unique_ptr<Layer> make_input_layer(const LayerSpec&);
std::unique_ptr<Layer> make_labels_layer(const LayerSpec&);
std::unique_ptr<Layer> make_conv_layer(const LayerSpec&);
std::unique_ptr<Layer> make_fc_layer(const LayerSpec&);
std::unique_ptr<Layer> make_pool_layer(const LayerSpec&);
std::unique_ptr<Layer> make_lrn_layer(const LayerSpec&);
std::unique_ptr<Layer> make_neuron_layer(const LayerSpec&);
std::unique_ptr<Layer> make_dropout_layer(const LayerSpec&);
std::unique_ptr<Layer> make_softmax_cost_layer(const LayerSpec&);
std::unique_ptr<Layer> make_concat_layer(const LayerSpec&);
std::unique_ptr<Layer> make_split_layer(const LayerSpec&);
std::unique_ptr<Layer> make_sum_layer(const LayerSpec&);
}  // namespace convnet

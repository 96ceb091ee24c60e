// cuda-convnet2's model files, read and written: a layers-*.cfg (the layers, their inputs, sizes,
// neurons and GPUs) with its layer-params-*.cfg (learning rates and their schedules, momentum,
// weight decay, normalisation constants, dropout). Both are INI files, a [section] per layer.
//
// Reading maps each section onto convnet's layer types (docs/MODEL_FILES.md has the table, key
// by key): conv/local/fc with their neuron fused, pool (neuron= becomes a `neuron` layer named
// <pool>_neuron, as cuda-convnet2 itself detaches it), cmrnorm -> lrn (alpha = scale / size),
// rnorm (alpha = scale / size^2), dropout/dropout2, pass/concat -> concat, eltsum -> sum,
// softmax + cost.logreg -> one softmax_cost named after the cost. cuda-convnet2's output sizes
// (convolutions and pools round up) are kept. A key, type or value convnet does not understand
// is a ValueError naming the file, the section and the key.
//
// Writing does the reverse for the layers cuda-convnet2 has; a layer or option it cannot express
// is a ValueError naming the layer.
#pragma once
#include <string>

#include "convnet/spec.h"

namespace convnet {

// layers-X.cfg -> layer-params-X.cfg in the same folder (cuda-convnet2's naming); any other
// name -> "" (the caller must be told the params file).
std::string cuda_convnet_params_path(const std::string& layers_path);

// Whether a model file is a cuda-convnet2 cfg (by its extension).
bool is_cuda_convnet_cfg(const std::string& path);

// The net of a layers file and its params file. cuda-convnet2 takes the image size from its data
// provider, so it is given here (`input_size`, the side of the square images the data layer
// delivers: the crop); 0 is an error naming the data section.
ModelSpec read_cuda_convnet_cfg(const std::string& layers_path, const std::string& params_path,
                                int input_size);
// The same from texts; the names are what errors call the files.
ModelSpec parse_cuda_convnet_cfg(const std::string& layers_text, const std::string& params_text,
                                 int input_size, const std::string& layers_name = "layers.cfg",
                                 const std::string& params_name = "layer-params.cfg");

struct CudaConvnetCfg {
  std::string layers, params;  // the two files' texts
};
// The cfg pair of a model (its shapes are computed by building it on the CPU).
CudaConvnetCfg write_cuda_convnet_cfg(const ModelSpec& spec);

}  // namespace convnet

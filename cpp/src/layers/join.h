// Several inputs laid end to end in memory: a concat along channels for CHWN activations of one
// height and width, and a concat of the flattened rows for fully connected layers. Conv and fc
// layers with several inputs (AlexNet's conv3 and fc layers read both towers) read them joined.
#pragma once
#include <vector>

#include "convnet/tensor.h"

namespace convnet {

// Copies the inputs, in order, into `joined` (whose element count is their sum).
void join_inputs(const std::vector<Tensor>& in, Tensor& joined);
// Hands each input its part of `djoined`: din[i] = part (or += part when accumulate[i]);
// undefined din[i] are skipped.
void split_gradient(const Tensor& djoined, const std::vector<Tensor>& in, std::vector<Tensor>& din,
                    const std::vector<bool>& accumulate);

}  // namespace convnet

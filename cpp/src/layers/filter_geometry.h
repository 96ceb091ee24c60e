// What conv and local layers share: their geometry options, the joined input's geometry, and the
// output rows each im2col chunk covers.
#pragma once
#include <string>
#include <vector>

#include "convnet/ops.h"
#include "convnet/spec.h"
#include "convnet/tensor.h"

namespace convnet {

// The column matrix's cap: chunks of output rows keep im2col's columns under it.
constexpr int64_t kFilterWorkspaceBytes = 256ll << 20;

// filters, size, stride, padding and ceil from the layer's options (groups is conv's alone).
ConvGeometry read_filter_options(const LayerOptions& options);
// `g` with the channels, height, width and batch of the inputs joined along channels, finished;
// ValueError naming the layer (`who`) and the inputs when their heights or widths differ.
ConvGeometry join_geometry(ConvGeometry g, const std::vector<Shape>& in,
                           const std::vector<std::string>& names, const std::string& who);
// Output rows per chunk: as many as fit the cap, or `option` (> 0) when given.
int chunk_rows_for(const ConvGeometry& g, int option);

}  // namespace convnet

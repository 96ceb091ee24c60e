// What conv and local layers share: their geometry options, the joined input's geometry, and the
// output rows each im2col chunk covers.
#pragma once
#include <string>
#include <vector>

#include "convnet/ops.h"
#include "convnet/spec.h"
#include "convnet/tensor.h"

namespace convnet {

// The column matrix's cap: chunks of output rows keep im2col's columns under it. On the CPU
// the cap is small: a chunk's GEMMs run as fast as the whole batch's (bench/RESULTS.md, issue 17)
// and the workspace was the largest block after the weights; a GPU's GEMMs want wide matrices.
constexpr int64_t kCpuFilterWorkspaceBytes = 32ll << 20;
constexpr int64_t kGpuFilterWorkspaceBytes = 256ll << 20;

// filters, size, stride, padding and ceil from the layer's options (groups is conv's alone).
ConvGeometry read_filter_options(const LayerOptions& options);
// `g` with the channels, height, width and batch of the inputs joined along channels, finished;
// ValueError naming the layer (`who`) and the inputs when their heights or widths differ.
ConvGeometry join_geometry(ConvGeometry g, const std::vector<Shape>& in,
                           const std::vector<std::string>& names, const std::string& who);
// Output rows per chunk: as many as fit the cap of `device`, or `option` (> 0) when given.
int chunk_rows_for(const ConvGeometry& g, int option, const Device& device);

}  // namespace convnet

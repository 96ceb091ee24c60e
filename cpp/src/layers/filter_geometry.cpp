#include "layers/filter_geometry.h"

#include <algorithm>

#include "convnet/error.h"

namespace convnet {

ConvGeometry read_filter_options(const LayerOptions& o) {
  ConvGeometry g;
  g.filters = o.get_int("filters");
  g.size = o.get_int("size");
  g.stride = o.get_int("stride");
  g.pad = o.get_int("padding");
  g.ceil_mode = o.get_bool("ceil");
  return g;
}

ConvGeometry join_geometry(ConvGeometry g, const std::vector<Shape>& in,
                           const std::vector<std::string>& names, const std::string& who) {
  int channels = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    CONVNET_CHECK(in[i][1] == in[0][1] && in[i][2] == in[0][2], who, ": input '", names[i], "' is ",
                  in[i][1], "x", in[i][2], " but '", names[0], "' is ", in[0][1], "x", in[0][2],
                  " (joined inputs must share height and width)");
    channels += in[i][0];
  }
  g.channels = channels;
  g.height = in[0][1];
  g.width = in[0][2];
  g.batch = in[0][3];
  g.finish(who);
  return g;
}

int chunk_rows_for(const ConvGeometry& g, int option, const Device& device) {
  if (option > 0) return std::min(option, g.out_h);
  const int64_t row_floats = g.col_rows() * g.out_w * g.batch;
  const int64_t cap = device.is_cuda() ? kGpuFilterWorkspaceBytes : kCpuFilterWorkspaceBytes;
  return int(std::clamp<int64_t>(cap / 4 / row_floats, 1, g.out_h));
}

}  // namespace convnet

// load_image_window: read the file, let the decoder pick the DCT scale and the region once the
// image's dimensions are known, resample the window.
#include "data/image_window.h"

#include <algorithm>
#include <vector>

#include "convnet/error.h"  // first: data.h uses std::runtime_error without <stdexcept>
#include "convnet/data.h"
#include "data/image_decode.h"
#include "data/image_resize.h"

namespace convnet {
namespace {

// Per worker thread, kept between images so that steady state allocates nothing.
struct WindowScratch {
  std::vector<uint8_t> file, pixels;
  std::vector<uint32_t> resample;
};

}  // namespace

void load_image_window(const std::string& path, int size, const ImageWindow& window,
                       uint8_t* rgbx) {
  CONVNET_CHECK(size >= 1, "load_image_window: size must be >= 1, got ", size);
  CONVNET_CHECK(window.height >= 1 && window.width >= 1 && window.top >= 0 && window.left >= 0 &&
                    window.top + window.height <= size && window.left + window.width <= size,
                "load_image_window: window ", window.height, " x ", window.width, " at (",
                window.top, ", ", window.left, ") is outside the ", size, " x ", size, " crop");
  thread_local WindowScratch scratch;
  read_file(path, scratch.file);
  AxisTaps rows, cols;
  DecodedRegion region;
  decode_region(path, scratch.file, 4,
                [&](int file_w, int file_h, int max_scale) {
                  const ResizeGeometry g = shorter_side_geometry(file_w, file_h, size);
                  RegionRequest r;
                  r.scale = std::min(max_scale, dct_scale_for(file_w, file_h, size));
                  cols = axis_taps(file_w, r.scale, g.resized_width, g.crop_x + window.left,
                                   window.width);
                  rows = axis_taps(file_h, r.scale, g.resized_height, g.crop_y + window.top,
                                   window.height);
                  // One column of margin each side: a cropped JPEG decode's outermost columns may
                  // differ from a full decode (see decode_region).
                  const int full_w = (file_w + r.scale - 1) / r.scale;
                  r.left = std::max(0, cols.lo - 1);
                  r.right = std::min(full_w, cols.hi + 1);
                  r.top = rows.lo;
                  r.bottom = rows.hi;
                  return r;
                },
                scratch.pixels, region);
  resample(region.pixels, region.stride, region.channels, region.left, region.top, rows, cols,
           window.mirror, rgbx, scratch.resample);
}

}  // namespace convnet

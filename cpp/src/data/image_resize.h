// AlexNet's resize: the shorter side to `size` (the longer scaled by the same factor, rounded half
// up), then the centre size x size crop. Every output pixel depends only on its own position, so
// any window of the crop can be computed alone and comes out identical to the same window of the
// whole crop: the folder source computes only the window a training crop needs.
//
// Arithmetic is fixed-point (weights of 16 bits, an intermediate of 8 fractional bits), so a
// pixel's value is an exact integer computation that does not depend on vectorisation or on the
// window. Against exact area averaging in float64 about 7 values in 10,000 round the other way
// (measured in tests/python/test_data.py).
#pragma once
#include <cstdint>
#include <vector>

#include "data/image_decode.h"

namespace convnet {

// Where the centre crop lies in the resized image.
struct ResizeGeometry {
  int resized_width = 0, resized_height = 0;
  int crop_x = 0, crop_y = 0;  // floor((resized - size) / 2) along each axis
};
ResizeGeometry shorter_side_geometry(int width, int height, int size);

// One axis: output j of [begin, begin + count) is sum_k weight[j * taps + k] * in[first[j] + k],
// k < taps, weights summing to 1 << kWeightBits. The input is the axis of an image of
// `file_length` pixels decoded at 1/scale (ceil(file_length / scale) pixels, the last one partly
// outside the picture): positions follow the file's geometry, not the rounded-up decoded size.
// Shrinking (or any DCT-scaled decode): area averaging, each input weighted by how much of the
// output pixel it covers. Enlarging: bilinear between the two nearest inputs, centres aligned.
struct AxisTaps {
  static constexpr int kWeightBits = 16;
  int taps = 1;
  std::vector<int> first;
  std::vector<int32_t> weight;
  int lo = 0, hi = 0;  // the inputs read: [lo, hi)
};
AxisTaps axis_taps(int file_length, int scale, int resized_length, int begin, int count);

// Resamples a region of a decoded image: `pixels` holds `channels` (1 to 4) bytes per pixel, rows
// `stride` bytes apart, its first pixel at (origin_x, origin_y) of the decoded image; it must
// cover rows.lo..rows.hi and cols.lo..cols.hi. Writes rows.first.size() x cols.first.size()
// pixels of `channels` bytes (HWC), each row reversed when `mirror`. `scratch` is reused between
// calls. Four channels (RGBX) take the vectorised path.
void resample(const uint8_t* pixels, size_t stride, int channels, int origin_x, int origin_y,
              const AxisTaps& rows, const AxisTaps& cols, bool mirror, uint8_t* out,
              std::vector<uint32_t>& scratch);

// The whole size x size centre crop of a decoded image (HWC, 1 to 4 channels), with the file's
// geometry when the image was DCT-scaled. ValueError for size < 1 or an empty image.
Image resize_shorter_and_centre_crop(const Image& in, int size);

}  // namespace convnet

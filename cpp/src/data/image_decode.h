// Image decoding (JPEG through libjpeg-turbo, PNG through libpng) and the AlexNet-style
// "shorter side to N, centre crop N x N" resize, for the folder data source. Everything here is
// a pure function of its arguments, so several data workers may call it at once.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace convnet {

// A decoded image: height x width x channels bytes, interleaved (HWC). decode_image always gives
// 3 channels (RGB); the resize works for any channel count.
struct Image {
  int channels = 3, height = 0, width = 0;
  std::vector<uint8_t> pixels;
};

// Decodes a JPEG or PNG file, recognised by its first bytes (not its extension: ImageNet has a PNG
// named .JPEG). Grey, grey+alpha, palette, RGBA (alpha dropped), 16-bit (reduced to 8) and CMYK
// (Adobe-inverted or plain) all come out as 8-bit RGB. When min_side_hint > 0, a JPEG may be
// decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, much faster than decoding in full and
// shrinking) as long as its shorter side stays >= min_side_hint.
// Throws DataError naming the file for an unreadable, corrupt, truncated or unknown-format file,
// and RuntimeError when this build lacks the library the file needs.
Image decode_image(const std::string& path, int min_side_hint = 0);

// Resizes so the shorter side is exactly `size` (the longer side scaled by the same factor and
// rounded; area averaging when shrinking an axis, bilinear when enlarging it), then returns the
// centre size x size crop (offset floor((long - size) / 2) along the longer side). Only the
// cropped part is computed. ValueError for size < 1 or an empty image.
Image resize_shorter_and_centre_crop(const Image& in, int size);

// Writes the image as channels x height x width floats (CHW), values 0..255.
void image_to_chw(const Image& image, float* chw);

}  // namespace convnet

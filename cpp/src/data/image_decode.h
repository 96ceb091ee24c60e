// Image decoding: JPEG through libjpeg-turbo, PNG through libpng, to 8-bit RGB (or RGBX). A JPEG
// can be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) and only in part (the rows and columns a
// caller needs), which is most of what makes the folder source fast. Everything here is a pure
// function of its arguments, so several data workers may call it at once.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace convnet {

// A decoded image: height x width x channels bytes, interleaved (HWC). decode_image always gives
// 3 channels (RGB); the resize works for any channel count. A JPEG decoded with DCT scaling
// remembers the file's dimensions, so that resizing it keeps the file's exact geometry (the
// scaled dimensions are rounded up: 375 / 2 -> 188).
struct Image {
  int channels = 3, height = 0, width = 0;
  std::vector<uint8_t> pixels;
  int scale = 1;                       // decoded at 1/scale of the file's size
  int file_width = 0, file_height = 0;  // the file's dimensions; 0: the same as width, height
};

// Reads the whole file. DataError naming it when it cannot be opened or read.
void read_file(const std::string& path, std::vector<uint8_t>& data);

// What a caller of decode_region needs from an image, chosen once its dimensions are known: a DCT
// scale (JPEG only; 1 for PNG) and a rectangle of the image as decoded at that scale.
struct RegionRequest {
  int scale = 1;
  int left = 0, top = 0, right = 0, bottom = 0;  // columns [left, right), rows [top, bottom)
};

// Part of a decoded image: `pixels` holds rows [top, top + height) and columns
// [left, left + width) (at least the requested ones) of the image as decoded at 1/scale, whose
// full size is full_width x full_height; `channels` bytes per pixel, rows `stride` bytes apart.
struct DecodedRegion {
  int file_width = 0, file_height = 0;
  int scale = 1, full_width = 0, full_height = 0;
  int left = 0, top = 0, width = 0, height = 0;
  int channels = 3;
  size_t stride = 0;
  const uint8_t* pixels = nullptr;  // into the caller's buffer
};

// Decodes the JPEG or PNG image in `file` (recognised by its first bytes, not its name: ImageNet
// has a PNG named .JPEG) as `channels` = 3 (RGB) or 4 (RGBX) bytes per pixel. Grey, grey+alpha,
// palette, RGBA (alpha dropped), 16-bit (reduced to 8) and CMYK (Adobe-inverted or plain) all
// come out as RGB. `choose(file_width, file_height, max_scale)` picks the scale (at most
// max_scale: 8 for a JPEG, 1 for a PNG) and the rectangle. A JPEG is then decoded only there
// (libjpeg-turbo's jpeg_crop_scanline and jpeg_skip_scanlines): its pixels are those of a full
// decode, except that the outermost column on each side of a cropped region may differ (libjpeg
// treats it as the image's edge when upsampling chroma), so callers ask for a column of margin.
// A PNG is decoded in full. `buffer` holds the pixels (reused between calls). The rows above the
// rectangle are entropy-decoded (JPEG data is sequential); those below only when the file lacks
// its end-of-image marker, so a truncated file is rejected whatever part of it is asked for, and
// damaged data wherever rows are decoded (the rectangle and above).
// Throws DataError naming `path` for an unreadable, corrupt, truncated or unknown-format file,
// and RuntimeError when this build lacks the library the file needs.
void decode_region(const std::string& path, const std::vector<uint8_t>& file, int channels,
                   const std::function<RegionRequest(int, int, int)>& choose,
                   std::vector<uint8_t>& buffer, DecodedRegion& out);

// The strongest DCT scale (8, 4, 2 or 1) at which a file_width x file_height image keeps its
// shorter side >= min_side (exactly: file side / scale >= min_side, so what follows only ever
// shrinks). libjpeg-turbo has SIMD code only for these scales: its M/8 scales (3/8, 6/8, ...)
// decode slower than the full image (measured in bench/RESULTS.md).
int dct_scale_for(int file_width, int file_height, int min_side);

// Decodes the whole image as 3-channel RGB. When min_side_hint > 0, a JPEG is decoded at the
// scale dct_scale_for gives (much faster than decoding in full and shrinking).
Image decode_image(const std::string& path, int min_side_hint = 0);

// Writes the image as channels x height x width floats (CHW), values 0..255.
void image_to_chw(const Image& image, float* chw);

}  // namespace convnet

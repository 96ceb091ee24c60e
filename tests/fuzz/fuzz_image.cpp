// JPEG and PNG decoding and the crop window: the region a data worker asks for (the first byte
// picks a scale and a corner, so that partial decodes are explored as well as whole ones).
#include <algorithm>
#include <vector>

#include "data/image_decode.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t pick = data[0];
  const std::vector<uint8_t> file(data + 1, data + size);
  auto choose = [pick](int width, int height, int max_scale) {
    convnet::RegionRequest r;
    r.scale = std::min(max_scale, 1 << (pick & 3));
    const int w = (width + r.scale - 1) / r.scale, h = (height + r.scale - 1) / r.scale;
    // A window of at most 32x32, at one of four places.
    r.left = (pick & 4) ? std::max(0, w - 32) : 0;
    r.top = (pick & 8) ? std::max(0, h - 32) : 0;
    r.right = std::min(w, r.left + 32);
    r.bottom = std::min(h, r.top + 32);
    return r;
  };
  std::vector<uint8_t> buffer;
  convnet::DecodedRegion region;
  convnet::fuzz::expect_clear_error([&] {
    convnet::decode_region("fuzz-input", file, (pick & 16) ? 4 : 3, choose, buffer, region);
  });
  return 0;
}

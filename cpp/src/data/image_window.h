// One window of an image file as the folder source sees it (resized so the shorter side is
// `size`, centre-cropped to size x size), computed with as little work as the window allows: the
// JPEG decoded at the strongest DCT scale that keeps the shorter side >= size and only in the rows
// and columns the window's resampling reads, then only the window resized.
#pragma once
#include <cstdint>
#include <string>

namespace convnet {

struct ImageWindow {
  int top = 0, left = 0, height = 0, width = 0;  // inside the size x size crop
  bool mirror = false;                           // each row reversed
};

// Writes window.height x window.width pixels of 4 bytes (R, G, B and one unused), row by row. The
// pixels are those of the same window of the whole crop, whatever the window. Thread-safe
// (per-thread scratch buffers). DataError naming `path` for a file that cannot be read or
// decoded; ValueError for a window outside the crop.
void load_image_window(const std::string& path, int size, const ImageWindow& window,
                       uint8_t* rgbx);

}  // namespace convnet

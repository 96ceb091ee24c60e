// Sources of 8-bit images that can produce any window of an example directly, doing only the work
// the window needs: the pipeline's fast path (folder_source). Internal to the data module.
#pragma once
#include <cstdint>

#include "convnet/data.h"
#include "data/image_window.h"

namespace convnet {

class WindowSource : public DataSource {
 public:
  // Writes the window of example `index` (inside its height() x width() image) as
  // window.height x window.width pixels of 4 bytes (channels() values, then padding), row by row,
  // rows reversed when window.mirror, and returns the label. The bytes equal load()'s values in
  // that window. Thread-safe; DataError as load().
  virtual int load_window(int64_t index, const ImageWindow& window, uint8_t* pixels) const = 0;

 protected:
  // load() of an RGB source through load_window: the whole height() x width() image as CHW floats.
  int load_whole(int64_t index, float* chw) const;
};

}  // namespace convnet

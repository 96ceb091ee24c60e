// IDX files, raw or gzip-compressed (recognised by their first bytes), as read_idx takes them.
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = convnet::fuzz::as_file(data, size, "-ubyte");
  convnet::fuzz::expect_clear_error([&] { convnet::read_idx(path); });
  return 0;
}

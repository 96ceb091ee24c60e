// Checkpoints (safetensors files with convnet's metadata): the header, the metadata, the model
// definition inside, the checksum and the values, as a resume checks them before loading.
#include "convnet/checkpoint.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = convnet::fuzz::as_file(data, size, ".safetensors");
  convnet::fuzz::expect_clear_error([&] { convnet::verify_checkpoint(path); });
  return 0;
}

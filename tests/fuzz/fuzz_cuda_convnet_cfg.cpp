// cuda-convnet2 model files: a layers file and its layer-params file. The input holds both,
// separated by a line "%%" (a layers file alone when there is none).
#include "convnet/cuda_convnet_cfg.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t split = text.find("\n%%\n");
  const std::string layers = text.substr(0, split);
  const std::string params = split == std::string::npos ? "" : text.substr(split + 4);
  convnet::fuzz::expect_clear_error([&] { convnet::parse_cuda_convnet_cfg(layers, params, 24); });
  return 0;
}

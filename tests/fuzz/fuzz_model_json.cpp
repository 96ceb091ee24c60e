// Model definitions in JSON (convnet's own model files): parsing and validation.
#include "convnet/spec.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  convnet::fuzz::expect_clear_error([&] { convnet::ModelSpec::from_json(text); });
  return 0;
}

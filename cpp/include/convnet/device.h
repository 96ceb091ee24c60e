// Where a tensor lives. A model definition names logical devices (cuda-convnet's `gpu=`);
// a Net maps each to one of these physical devices when it is built.
#pragma once
#include <string>

namespace convnet {

struct Device {
  enum class Kind { CPU, CUDA };
  Kind kind = Kind::CPU;
  // CPU devices may carry an index too: two "CPU devices" behave like two cards (separate
  // buffers, explicit copies between them), which lets the CPU test the multi-device paths.
  int index = 0;

  static Device cpu(int index = 0) { return {Kind::CPU, index}; }
  static Device cuda(int index = 0) { return {Kind::CUDA, index}; }
  // "cpu", "cpu:1", "cuda", "cuda:0", "gpu:1". Throws ValueError on anything else.
  static Device parse(const std::string& text);

  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  std::string str() const;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// True when this build has the CUDA backend compiled in.
bool cuda_compiled();
// Number of CUDA devices visible at run time (0 without a GPU or without the CUDA backend).
int cuda_device_count();
// Throws RuntimeError when `device` cannot be used here (no CUDA backend, no such GPU).
void require_available(const Device& device);

}  // namespace convnet

// convnet-info: what this build of convnet is (BLAS, CUDA, devices, layer types) and, given a
// model definition, its layers with output shapes, parameter counts and devices.
//
//   convnet-info                      build and machine information
//   convnet-info MODEL.json [BATCH]   the model's layers (shapes for a batch of BATCH, default 1)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "convnet/error.h"
#include "convnet/net.h"
#include "cpu/cpu_ops.h"

using namespace convnet;

static void print_build() {
  std::printf("convnet build\n  CPU BLAS: %s\n  CPU threads: %d\n  CUDA backend: %s\n  CUDA devices: %d\n",
              cpu::blas_name(), cpu::num_threads(), cuda_compiled() ? "compiled" : "not compiled",
              cuda_device_count());
  std::string types;
  for (const auto& t : layer_types()) types += (types.empty() ? "" : ", ") + t;
  std::printf("  layer types: %s\n", types.c_str());
}

static int print_model(const std::string& path, int batch) {
  ModelSpec spec = ModelSpec::from_file(path);
  Net net(spec);  // everything on the CPU
  Tensor dummy_labels({batch}, Device::cpu());
  dummy_labels.fill(0.f);
  for (Layer* l : net.layers()) {
    if (!l->is_input()) continue;
    if (l->role() == LayerRole::Labels) {
      net.set_input(l->name(), dummy_labels);
    } else {
      Shape s = net.output_shape(l->name());
      s.back() = batch;
      Tensor x(s, Device::cpu());
      x.fill(0.f);
      net.set_input(l->name(), x);
    }
  }
  std::printf("%-16s %-13s %-20s %12s  %s\n", "layer", "type", "output (C, H, W)", "parameters", "device");
  for (Layer* l : net.layers()) {
    Shape s = net.output_shape(l->name());
    int64_t params = 0;
    for (const Param& p : l->params()) params += p.value.numel();
    char shape[64];
    std::snprintf(shape, sizeof shape, "%d, %d, %d", s[0], s[1], s[2]);
    std::printf("%-16s %-13s %-20s %12lld  logical %d\n", l->name().c_str(), l->type().c_str(), shape,
                static_cast<long long>(params), l->spec().device);
  }
  std::printf("total parameters: %lld\n", static_cast<long long>(net.parameter_count()));
  return 0;
}

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
      std::printf("usage: convnet-info [MODEL.json [BATCH]]\n"
                  "  without arguments: this build's BLAS, CUDA backend, devices and layer types\n"
                  "  with a model definition: its layers, output shapes, parameter counts, devices\n");
      return 0;
    }
    if (argc < 2) {
      print_build();
      return 0;
    }
    const int batch = argc >= 3 ? std::atoi(argv[2]) : 1;
    if (batch <= 0) throw ValueError(std::string("BATCH must be a positive integer, got '") + argv[2] + "'");
    return print_model(argv[1], batch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "convnet-info: %s\n", e.what());
    return 1;
  }
}

// At the end of the test program every GPU's cuBLAS handles are destroyed and its cached blocks
// go back to the driver. Both are kept for the life of the process by design; given back here,
// what compute-sanitizer's leak check (scripts/gpu-check.sh) still reports is held by something.
#include <gtest/gtest.h>

#include "convnet/device.h"

#ifdef CONVNET_WITH_CUDA
#include "cuda/runtime.h"

namespace {

class GiveBackCachedBlocks : public ::testing::Environment {
 public:
  void TearDown() override {
    for (int d = 0; d < convnet::cuda_device_count(); ++d) {
      convnet::cuda::destroy_blas_handles(d);  // their workspaces go back to the cache
      convnet::cuda::empty_cache(d);
    }
  }
};

[[maybe_unused]] const ::testing::Environment* const kGiveBack =
    ::testing::AddGlobalTestEnvironment(new GiveBackCachedBlocks);

}  // namespace
#endif

// What a captured CUDA graph needs to know about the kernels it replays with new arguments:
// dropout, whose masks are keyed by the training step (dropout.cu records, graph.cpp patches).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace convnet::cuda {

// One dropout launch inside a capture: its graph node and every argument but the step.
struct DropoutNode {
  cudaGraphNode_t node = nullptr;
  void* func = nullptr;
  dim3 grid, block;
  const float* in = nullptr;
  float* out = nullptr;
  int64_t n = 0;
  float rate = 0;
  uint64_t seed = 0;
  int64_t cols = 0, global_cols = 0, offset = 0;  // the batch shard (dropout.cu DropArgs)
};

// While `sink` is set, this thread's dropout launches (on a capturing stream) are appended to it;
// nullptr stops recording.
void record_dropout_launches(std::vector<DropoutNode>* sink);
// Gives the node's kernel in `exec` the masks of training step `step`.
void patch_dropout_step(cudaGraphExec_t exec, const DropoutNode& node, uint64_t step);

}  // namespace convnet::cuda

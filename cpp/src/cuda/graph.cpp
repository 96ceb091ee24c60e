// StepGraph: stream capture of one device's compute stream into a CUDA graph, and its replays.
// Relaxed capture mode: the allocator may still call cudaMalloc while a capture runs (a block the
// warm-up step did not leave in the cache); what would break a capture is a wait on the host,
// and the net's step has none (cost statistics are read after the replay).
#include <memory>
#include <vector>

#include "cuda/check.h"
#include "cuda/runtime.h"
#include "cuda/graph_nodes.h"

namespace convnet::cuda {

struct StepGraph::Impl {
  int device = 0;
  int pool = 0;  // the allocator's graph pool, 0 before the first capture
  bool capturing = false;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::vector<DropoutNode> dropout;

  void destroy() noexcept {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    exec = nullptr;
    graph = nullptr;
    dropout.clear();
  }
};

StepGraph::StepGraph(int device) : impl_(std::make_unique<Impl>()) {
  check_device(device);
  impl_->device = device;
}

StepGraph::~StepGraph() {
  abandon();
  impl_->destroy();
  // Only now may the graph's blocks serve others: no replay can run after the destroy above
  // returns, except one still queued, which the stream orders before any later user.
  if (impl_->pool) free_graph_pool(impl_->device, impl_->pool);
}

void StepGraph::begin() {
  Impl& g = *impl_;
  CONVNET_CHECK(!g.capturing, "StepGraph::begin: a capture is already running");
  g.destroy();
  set_device(g.device);
  if (g.pool) free_graph_pool(g.device, g.pool);
  g.pool = 0;
  synchronize(g.device);  // nothing of the eager past may be in flight into the capture
  g.pool = begin_graph_pool(g.device);
  const cudaError_t err = cudaStreamBeginCapture(stream(g.device), cudaStreamCaptureModeRelaxed);
  if (err != cudaSuccess) {
    end_graph_pool(g.device);
    check_cuda(err, "cudaStreamBeginCapture", __FILE__, __LINE__);
  }
  g.capturing = true;
  record_dropout_launches(&g.dropout);
}

void StepGraph::end() {
  Impl& g = *impl_;
  CONVNET_CHECK(g.capturing, "StepGraph::end: no capture is running");
  record_dropout_launches(nullptr);
  end_graph_pool(g.device);
  g.capturing = false;
  set_device(g.device);
  const cudaError_t err = cudaStreamEndCapture(stream(g.device), &g.graph);
  if (err != cudaSuccess || !g.graph) {
    cudaGetLastError();
    g.destroy();
    throw RuntimeError(detail::concat("CUDA graph capture on cuda:", g.device,
                                      " failed: cudaStreamEndCapture: ", cudaGetErrorName(err),
                                      ": ", cudaGetErrorString(err),
                                      " (some work in the step waited for the host or used "
                                      "another stream)"));
  }
  const cudaError_t inst = cudaGraphInstantiate(&g.exec, g.graph, 0);
  if (inst != cudaSuccess) {
    cudaGetLastError();
    g.exec = nullptr;
    g.destroy();
    check_cuda(inst, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
}

void StepGraph::abandon() noexcept {
  Impl& g = *impl_;
  if (!g.capturing) return;
  record_dropout_launches(nullptr);
  end_graph_pool(g.device);
  g.capturing = false;
  cudaGraph_t partial = nullptr;
  if (cudaStreamEndCapture(stream(g.device), &partial) != cudaSuccess) cudaGetLastError();
  if (partial) cudaGraphDestroy(partial);
  g.destroy();
}

bool StepGraph::ready() const { return impl_->exec != nullptr; }

void StepGraph::set_dropout_step(uint64_t step) {
  Impl& g = *impl_;
  CONVNET_CHECK(g.exec, "StepGraph::set_dropout_step: no graph has been captured");
  for (const DropoutNode& d : g.dropout) patch_dropout_step(g.exec, d, step);
}

void StepGraph::launch() {
  Impl& g = *impl_;
  CONVNET_CHECK(g.exec, "StepGraph::launch: no graph has been captured");
  set_device(g.device);
  CONVNET_CUDA_CHECK(cudaGraphLaunch(g.exec, stream(g.device)));
}

size_t StepGraph::nodes() const {
  size_t n = 0;
  if (impl_->graph) CONVNET_CUDA_CHECK(cudaGraphGetNodes(impl_->graph, nullptr, &n));
  return n;
}


}  // namespace convnet::cuda

// Time per kind of op inside a layer, while a net profiles (Net::set_profiling). The net points
// this thread's sink at the layer's record around each forward and backward; the dispatcher
// (core/ops.cpp) times the ops that share a layer's time with others (GEMMs, im2col, col2im, the
// bias and the neuron) into it, with their work: floating-point operations (a multiply-add is 2)
// and the least memory traffic (what the op must read plus what it writes). So a profile tells
// whether a convolution's time is its GEMMs' or the memory-bound passes around them.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "convnet/device.h"

namespace convnet {

struct OpTime {
  double ms = 0;
  int64_t calls = 0;
  double flop = 0;   // 0 for an op that only moves memory
  double bytes = 0;  // the least bytes read plus written
  OpTime& operator+=(const OpTime& o);
};
using OpTimes = std::map<std::string, OpTime>;  // by op name ("gemm", "im2col", ...)

// While alive, the timed ops this thread runs add to *sink (nullptr: to nothing). The sink that
// was set before comes back at the end.
class OpProfileScope {
 public:
  explicit OpProfileScope(OpTimes* sink);
  ~OpProfileScope();
  OpProfileScope(const OpProfileScope&) = delete;
  OpProfileScope& operator=(const OpProfileScope&) = delete;

 private:
  OpTimes* previous_;
};

// Times one op into this thread's sink, if it has one; does nothing otherwise. An op timed
// inside another counts in the outer one only. On a GPU the device is waited for before and
// after, so the time is the kernels' and not their launch's.
class OpTimer {
 public:
  OpTimer(const char* op, const Device& device, double flop, double bytes);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpTime* record_ = nullptr;
  Device device_;
  double flop_ = 0, bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace convnet

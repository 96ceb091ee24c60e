#include "convnet/op_profile.h"

namespace convnet {

namespace {
thread_local OpTimes* sink = nullptr;
thread_local bool timing = false;  // an op of this thread is being timed
}  // namespace

OpTime& OpTime::operator+=(const OpTime& o) {
  ms += o.ms;
  calls += o.calls;
  flop += o.flop;
  bytes += o.bytes;
  return *this;
}

OpProfileScope::OpProfileScope(OpTimes* s) : previous_(sink) { sink = s; }

OpProfileScope::~OpProfileScope() { sink = previous_; }

OpTimer::OpTimer(const char* op, const Device& device, double flop, double bytes)
    : device_(device), flop_(flop), bytes_(bytes) {
  if (!sink || timing) return;
  // Wait first: if the wait throws, no destructor runs, so nothing may be marked as timing yet.
  if (device_.is_cuda()) cuda_synchronize(device_.index);
  record_ = &(*sink)[op];
  timing = true;
  start_ = std::chrono::steady_clock::now();
}

OpTimer::~OpTimer() {
  if (!record_) return;
  timing = false;
  // A failed wait is not thrown from here (this may run while an exception unwinds): the device's
  // error stays pending and the next call on it reports it.
  try {
    if (device_.is_cuda()) cuda_synchronize(device_.index);
  } catch (...) {
  }
  record_->ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  ++record_->calls;
  record_->flop += flop_;
  record_->bytes += bytes_;
}

}  // namespace convnet

// A step timeline: spans (track, name, category, start, end) on the host's steady clock, written
// as Chrome trace JSON (opens in Perfetto or chrome://tracing), one track per lane of a device
// (Net::lanes) and one for the host, so that a user sees which layers ran at the same time.
#pragma once
#include <mutex>
#include <string>
#include <vector>

namespace convnet {

class Trace {
 public:
  struct Span {
    std::string track;     // "cpu:0", "cuda:1", "cuda:0 lane 1", "host"
    std::string name;      // a layer, or a phase of the step ("data", "all-reduce wait")
    std::string category;  // "forward", "backward", "copy", "step"
    double start_us = 0, end_us = 0;  // since the trace began
  };
  Trace();
  double now_us() const;
  void add(Span span);  // thread-safe: device threads add their own spans
  std::vector<Span> spans() const;
  // Writes the JSON beside `path` and renames it over, so a reader never sees half a file.
  void write(const std::string& path) const;

 private:
  double origin_us_;
  mutable std::mutex mu_;
  std::vector<Span> spans_;
};

}  // namespace convnet

#include "convnet/trace.h"

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "convnet/error.h"

namespace convnet {

namespace {
double steady_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Trace::Trace() : origin_us_(steady_us()) {}

double Trace::now_us() const { return steady_us() - origin_us_; }

void Trace::add(Span span) {
  std::lock_guard<std::mutex> lock(mu_);
  spans_.push_back(std::move(span));
}

std::vector<Trace::Span> Trace::spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

void Trace::write(const std::string& path) const {
  using nlohmann::json;
  json events = json::array();
  std::map<std::string, int> tid;  // tracks numbered in the order they first appear
  for (const Span& s : spans()) {
    auto [it, fresh] = tid.emplace(s.track, int(tid.size()));
    if (fresh)
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 0}, {"tid", it->second},
                        {"args", {{"name", s.track}}}});
    events.push_back({{"ph", "X"}, {"name", s.name}, {"cat", s.category}, {"pid", 0},
                      {"tid", it->second}, {"ts", s.start_us}, {"dur", s.end_us - s.start_us}});
  }
  const json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    if (!(out << doc.dump() << '\n')) {
      const std::string reason = std::strerror(errno);
      std::remove(tmp.c_str());
      throw RuntimeError("cannot write the trace '" + path + "': " + reason);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw RuntimeError("cannot write the trace '" + path + "' (rename failed)");
  }
}

}  // namespace convnet

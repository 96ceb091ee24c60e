// Host threads that run a net's physical devices side by side (internal to the core): one
// persistent thread per device, each given the same job in a pass (walk the layers, run those
// of its device), and the events that order the cross-device edges between them. With a single
// device the job runs on the caller's thread and nothing else changes.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace convnet {

class DeviceThreads {
 public:
  explicit DeviceThreads(int count);
  ~DeviceThreads();
  DeviceThreads(const DeviceThreads&) = delete;
  DeviceThreads& operator=(const DeviceThreads&) = delete;

  int size() const { return count_; }

  // Runs job(k) on thread k for every k and returns when all have finished. Meanwhile the
  // calling thread runs host_work() whenever a job calls wake_host() (and once at the end), so
  // that work which must stay on the caller's thread (MPI) follows the jobs' progress. The
  // first exception a job throws is rethrown here; it cancels the others' waits.
  // `events` events, all unsignalled, are available to the jobs during the run.
  void run(size_t events, const std::function<void(int)>& job,
           const std::function<void()>& host_work = {});

  // Within a run: marks an event done, or blocks until another thread has.
  void signal(size_t event);
  void wait(size_t event);
  // Has the host run host_work now (with one thread: right here, on the caller's thread).
  void wake_host();

 private:
  struct Cancelled {};  // thrown out of wait() when another job failed
  void worker(int k);
  void finish_job(std::exception_ptr error);

  const int count_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable work_cv_, event_cv_, host_cv_;
  const std::function<void(int)>* job_ = nullptr;
  const std::function<void()>* host_work_ = nullptr;
  uint64_t generation_ = 0;  // counts runs: a worker starts once per generation
  int running_ = 0;          // jobs of this run not yet finished
  bool host_woken_ = false, stopping_ = false, failed_ = false;
  std::exception_ptr error_;
  std::vector<char> done_;   // per event
};

}  // namespace convnet

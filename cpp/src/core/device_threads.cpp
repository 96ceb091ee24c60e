#include "core/device_threads.h"

namespace convnet {

DeviceThreads::DeviceThreads(int count) : count_(count < 1 ? 1 : count) {
  if (count_ == 1) return;  // the caller's thread runs the only job
  for (int k = 0; k < count_; ++k) threads_.emplace_back([this, k] { worker(k); });
}

DeviceThreads::~DeviceThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void DeviceThreads::run(size_t events, const std::function<void(int)>& job,
                        const std::function<void()>& host_work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.assign(events, 0);
    failed_ = false;
    error_ = nullptr;
    host_woken_ = false;
  }
  if (count_ == 1) {
    host_work_ = host_work ? &host_work : nullptr;
    struct Reset {
      const std::function<void()>*& p;
      ~Reset() { p = nullptr; }
    } reset{host_work_};
    job(0);
    if (host_work) host_work();
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  job_ = &job;
  running_ = count_;
  ++generation_;
  work_cv_.notify_all();
  while (running_ > 0) {
    host_cv_.wait(lock, [&] { return running_ == 0 || host_woken_; });
    host_woken_ = false;
    if (host_work && !failed_) {
      lock.unlock();
      try {
        host_work();
      } catch (...) {
        lock.lock();
        if (!failed_) error_ = std::current_exception();
        failed_ = true;
        event_cv_.notify_all();
        continue;
      }
      lock.lock();
    }
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
  lock.unlock();
  if (host_work) host_work();
}

void DeviceThreads::worker(int k) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr error;
    try {
      (*job)(k);
    } catch (const Cancelled&) {
    } catch (...) {
      error = std::current_exception();
    }
    finish_job(error);
  }
}

void DeviceThreads::finish_job(std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error && !failed_) error_ = error;
  if (error) failed_ = true;
  --running_;
  event_cv_.notify_all();  // a failure cancels the waits of the others
  host_cv_.notify_all();
}

void DeviceThreads::signal(size_t event) {
  if (count_ == 1) return;  // a single thread never waits
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.at(event) = 1;
  }
  event_cv_.notify_all();
}

void DeviceThreads::wait(size_t event) {
  if (count_ == 1) return;  // its own events are signalled in program order
  std::unique_lock<std::mutex> lock(mu_);
  event_cv_.wait(lock, [&] { return failed_ || done_.at(event); });
  if (!done_[event]) throw Cancelled{};
}

void DeviceThreads::wake_host() {
  if (count_ == 1) {  // the job runs on the caller's thread
    if (host_work_) (*host_work_)();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    host_woken_ = true;
  }
  host_cv_.notify_all();
}

}  // namespace convnet

#include "worker/task_stream.h"

#include <prism/errors.h>

#include <chrono>
#include <exception>
#include <string>

#include "base/logging.h"
#include "base/mutex.h"

namespace prism {

TaskStream::~TaskStream() {
  MutexLock lock(mu_);
  if (ended_ || !attached_ || !completion_ || !runtime_.cancel) return;
  try {
    runtime_.cancel(*completion_);
  } catch (const std::exception& e) {
    PRISM_LOG_DEBUG("could not stop a dropped stream's task: {}", e.what());
  }
}

void TaskStream::Detach() {
  MutexLock lock(mu_);
  attached_ = false;
  runtime_ = Runtime{};
}

void TaskStream::Push(internal::RefPtr value) {
  {
    MutexLock lock(mu_);
    values_.push_back(std::move(value));
  }
  cv_.notify_all();
}

void TaskStream::End(bool failed) {
  {
    MutexLock lock(mu_);
    ended_ = true;
    failed_ = failed;
  }
  cv_.notify_all();
}

internal::RefPtr TaskStream::Next(int64_t timeout_ms) {
  UniqueLock lock(mu_);
  auto ready = [&] { return !values_.empty() || ended_; };
  if (!ready()) {
    if (!attached_) throw RuntimeError("prism is shut down");
    std::function<void(bool)> blocked = runtime_.blocked;
    lock.unlock();
    if (blocked) blocked(true);
    lock.lock();
    bool ok = true;
    if (timeout_ms < 0) {
      cv_.wait(lock, ready);
    } else {
      ok = cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready);
    }
    lock.unlock();
    if (blocked) blocked(false);
    lock.lock();
    if (!ok)
      throw GetTimeoutError("no value of the stream came within " + std::to_string(timeout_ms) +
                            " ms");
  }
  if (!values_.empty()) {
    internal::RefPtr v = std::move(values_.front());
    values_.pop_front();
    return v;
  }
  if (failed_ && !error_given_) {
    error_given_ = true;
    return completion_;  // holds the error
  }
  return nullptr;
}

}  // namespace prism

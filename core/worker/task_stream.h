// The caller's side of a streaming task: the values its task writes arrive in order (Push, on the
// event loop) and are read with Next; the task's first return object (the completion) says when,
// and how, it ended.
#pragma once

#include <prism/internal/runtime_api.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

#include "base/mutex.h"

namespace prism {

class TaskStream : public internal::StreamHandle {
 public:
  /// What a stream needs from the runtime that feeds it.
  struct Runtime {
    /// Stops the stream's task, as Cancel with force does (its completion is the task's ref).
    std::function<void(const internal::RefHandle& completion)> cancel;
    /// A reader starts (true) or stops (false) waiting: a task reading a stream gives its CPU
    /// back meanwhile.
    std::function<void(bool waiting)> blocked;
  };
  explicit TaskStream(Runtime runtime) : runtime_(std::move(runtime)) {}
  /// Dropped before its task ended: the task is stopped, since nobody reads what it writes and it
  /// may never end by itself.
  ~TaskStream() override;

  void SetCompletion(internal::RefPtr completion) { completion_ = std::move(completion); }
  /// The runtime shuts down: the stream no longer calls it (a read that would wait fails).
  void Detach();
  /// The next value arrived.
  void Push(internal::RefPtr value);
  /// The task ended; `failed`: with an error, which its completion holds.
  void End(bool failed);

  /// The next value; after the last one null, or once the completion (holding the error) if
  /// the task failed. Throws GetTimeoutError when none came within `timeout_ms` (< 0: waits).
  internal::RefPtr Next(int64_t timeout_ms) override;
  internal::RefPtr completion() const override { return completion_; }

 private:
  Runtime runtime_;  // cleared by Detach (under mu_)
  bool attached_ = true;
  internal::RefPtr completion_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<internal::RefPtr> values_;
  bool ended_ = false;
  bool failed_ = false;
  bool error_given_ = false;
};

}  // namespace prism

// A thread for the daemon's disk I/O (object spills and restores): jobs run in order there, and
// each job's completion is posted back to the daemon's event loop, so a large spill never stalls
// the requests the loop serves meanwhile.
#pragma once

#include <asio.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "base/mutex.h"
#include "base/thread_annotations.h"

namespace prism {

class DiskIoThread {
 public:
  explicit DiskIoThread(asio::io_context& loop);
  ~DiskIoThread();
  /// Any thread: runs `io` on the I/O thread, then `then` on the loop.
  void Run(std::function<void()> io, std::function<void()> then);
  /// Ends the thread after the jobs queued so far ran (their completions may still be posted),
  /// or, with `discard_queued`, after the one running (the rest are dropped). Idempotent.
  void Stop(bool discard_queued = false);

 private:
  void Loop();
  struct Job {
    std::function<void()> io, then;
  };
  asio::io_context& loop_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_ PRISM_GUARDED_BY(mu_);
  bool stop_ PRISM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace prism

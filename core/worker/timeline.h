// Task events for `prism timeline` and prism::WriteTimeline: with recording on (InitOptions::
// timeline), every worker appends one JSON line per task to <session>/timeline/<pid>.jsonl: when
// it ran on which thread, and for GPU tasks how long their work took on the GPU (timing events
// on the task's stream, written once the GPU reached them). The lines merge into a Chrome trace
// that Perfetto and chrome://tracing open.
#pragma once

#include <prism/gpu/backend.h>
#include <prism/status.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/mutex.h"
#include "base/thread_annotations.h"

namespace prism {

class TimelineRecorder {
 public:
  explicit TimelineRecorder(std::string session_dir) : dir_(std::move(session_dir) + "/timeline") {}
  ~TimelineRecorder();

  /// Microseconds since the epoch (the trace's clock).
  static int64_t NowUs();
  /// A task that ran on a host thread.
  void Task(const std::string& name, const std::string& task_id, int64_t start_us, int64_t end_us);
  /// A GPU task's work on `stream`: `start` and `end` were recorded on it around the task; the
  /// span is written once `end` is complete (checked at later calls and at Flush).
  void GpuTask(const std::string& name, const std::string& task_id, int64_t start_us,
               const std::string& stream, std::unique_ptr<gpu::Event> start,
               std::unique_ptr<gpu::Event> end);
  /// Writes what is pending, waiting for GPU spans when `wait`.
  void Flush(bool wait);

 private:
  void WriteLocked(const std::string& line) PRISM_REQUIRES(mu_);
  void PollLocked(bool wait) PRISM_REQUIRES(mu_);

  std::string dir_;
  Mutex mu_;
  std::FILE* file_ PRISM_GUARDED_BY(mu_) = nullptr;
  bool failed_ PRISM_GUARDED_BY(mu_) = false;
  struct Pending {
    std::string name, task_id, stream;
    int64_t start_us;
    std::unique_ptr<gpu::Event> start, end;
  };
  std::deque<Pending> pending_ PRISM_GUARDED_BY(mu_);
  // Writes GPU spans as their work completes (every 50 ms while some are pending).
  std::condition_variable cv_;
  bool stop_ PRISM_GUARDED_BY(mu_) = false;
  std::thread poller_;
};

/// Merges the timeline files of a session into one Chrome trace JSON file at `path`.
Status WriteChromeTrace(const std::string& session_dir, const std::string& path);

}  // namespace prism

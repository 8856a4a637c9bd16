// The worker side of task execution: tasks pushed by lease holders are queued by the event loop
// and run one at a time on the worker's main thread.
#pragma once

#include "base/thread_annotations.h"

#include "prism.pb.h"
#include "rpc/connection.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

namespace prism {

class TaskExecutor {
 public:
  /// `before_task` runs on the main thread before each task, with its spec.
  explicit TaskExecutor(std::function<void(const rpc::TaskSpec&)> before_task);
  /// Event-loop thread: queue a pushed task; its reply goes back on `from`.
  void Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from);
  /// Main thread: runs tasks until Stop().
  void Run();
  /// Any thread.
  void Stop();

  /// Runs one task spec against the function registry and builds its reply. Never throws.
  static rpc::TaskReply Execute(const rpc::TaskSpec& spec);

 private:
  struct Item {
    rpc::PushTask push;
    std::shared_ptr<rpc::Connection> from;
  };
  std::function<void(const rpc::TaskSpec&)> before_task_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_ PRISM_GUARDED_BY(mu_);
  bool stop_ PRISM_GUARDED_BY(mu_) = false;
};

}  // namespace prism

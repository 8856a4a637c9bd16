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

/// A task's reply, and what must stay alive until the reply has been sent (the result's refs).
struct ExecutedTask {
  rpc::TaskReply reply;
  std::shared_ptr<const void> hold;
  bool deferred = false;  // the reply is sent later, from another thread (an async method)
};

class TaskExecutor {
 public:
  /// Runs one task on the main thread and builds its reply.
  /// `from`: where the reply goes (a streaming task sends its values there as it runs).
  using Execute = std::function<ExecutedTask(std::shared_ptr<const rpc::PushTask>,
                                             const std::shared_ptr<rpc::Connection>& from)>;
  explicit TaskExecutor(Execute execute);
  /// Event-loop thread: queue a pushed task; its reply goes back on `from`.
  void Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from);
  /// Main thread: runs tasks until Stop().
  void Run();
  /// Any thread.
  void Stop();

 private:
  struct Item {
    rpc::PushTask push;
    std::shared_ptr<rpc::Connection> from;
  };
  Execute execute_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_ PRISM_GUARDED_BY(mu_);
  bool stop_ PRISM_GUARDED_BY(mu_) = false;
};

}  // namespace prism

// What runs on the calling thread, and the ids of what it makes. In a worker, an executor thread
// runs one pushed task after another (a Running scope per task); code anywhere else runs under the
// process's root task (the driver's, or a worker's own for code outside tasks). The tasks a task
// submits and the objects it puts are numbered per thread, so their ids follow from the task, its
// attempt and their order: a retry never meets what an earlier attempt left behind.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "base/ids.h"
#include "prism.pb.h"

namespace prism {

class TaskContext {
 public:
  /// `root`: the task of code that runs outside pushed tasks.
  explicit TaskContext(TaskId root) : root_(root) {}
  TaskContext(const TaskContext&) = delete;
  TaskContext& operator=(const TaskContext&) = delete;

  /// The calling thread runs `push`'s task while this lives: its id, attempt, the GPUs of its
  /// lease and (until the scope ends) its spec. The thread keeps the task's id afterwards, for
  /// code it leaves running (a thread the task started), until the next task enters.
  class Running {
   public:
    explicit Running(const rpc::PushTask& push);
    ~Running();
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
  };

  /// Whether the calling thread runs, or last ran, a pushed task.
  static bool InTask();
  /// The running task's spec (null outside a Running scope).
  static const rpc::TaskSpec* Spec();
  /// The GPUs (the daemon's instance indices) the calling thread's task holds.
  static const std::vector<int>& GpuIds();

  /// The calling thread's task, or the root.
  TaskId Current() const;
  /// The id of a task submitted now from the calling thread.
  TaskId NextChild();
  /// The id of an object put now from the calling thread. Throws RuntimeError once a task has
  /// put 16,777,215 objects.
  ObjectId NextPut();

 private:
  const TaskId root_;
  std::atomic<uint64_t> root_submitted_{0};
  std::atomic<uint32_t> root_puts_{0};
};

}  // namespace prism

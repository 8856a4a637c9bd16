// The worker side of task execution: tasks pushed by lease holders are queued by the event loop
// and run one at a time on the worker's main thread (or, for a threaded actor, on up to
// max_concurrency threads).
#pragma once

#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/spin.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "runtime/process_runtime.h"

namespace prism {

/// A task's reply, and what must stay alive until the reply has been sent (the result's refs).
struct ExecutedTask {
  rpc::TaskReply reply;
  std::shared_ptr<const void> hold;
  bool deferred = false;  // the reply is sent later, from another thread (an async method)
};

class TaskExecutor {
 public:
  /// Runs one task and builds its reply. `from`: where the reply goes (a streaming task sends
  /// its values there as it runs).
  using Execute = std::function<ExecutedTask(std::shared_ptr<const rpc::PushTask>,
                                             const std::shared_ptr<rpc::Connection>& from)>;
  explicit TaskExecutor(Execute execute);
  ~TaskExecutor();
  /// Event-loop thread: queue a pushed task; its reply goes back on `from`.
  void Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from);
  /// The same for a task kept where it was parsed (Connection::HoldFrame), not copied out.
  void Enqueue(std::shared_ptr<const rpc::PushTask> push, std::shared_ptr<rpc::Connection> from);
  /// Main thread: runs tasks until Stop().
  void Run();
  /// Lets up to `n` tasks run at once (a threaded actor). Threads beyond the one in Run() are
  /// added only while tasks wait and every running task has run for `patience` already, mostly
  /// off the CPU (blocked), at two looks `patience` apart: short calls keep to one thread (no
  /// handoffs between threads, no fight over Python's GIL), calls that block get the
  /// concurrency they were promised within about twice `patience`. An added thread idle for
  /// 100 ms ends.
  void AllowThreads(int n, std::chrono::microseconds patience = std::chrono::milliseconds(1));
  /// The same, but sets the limit exactly, also lower (a worker that ran GPU tasks side by side
  /// becoming an actor's process of max_concurrency 1): threads beyond it end when their task does.
  void SetThreads(int n, std::chrono::microseconds patience = std::chrono::milliseconds(1));
  /// Reads a caller's connection for its next call on the executor's own thread (through
  /// Connection::TryReadHere, handing a PushTask to Enqueue); true when it queued one.
  using ReadNext = std::function<bool(rpc::Connection&)>;
  /// Before Run(): while the main thread waits for the next call of a caller whose calls come
  /// one at a time, it reads that caller's connection itself with `read_next`, so the call is
  /// caught without the loop's thread being woken to pass it on (on a VM a wake-up costs 5-15
  /// us, a third of a round trip).
  void SetReadNext(ReadNext read_next) { read_next_ = std::move(read_next); }
  /// Any thread.
  void Stop();
  /// After Stop(): waits for the threads AllowThreads added (not the caller's own).
  void Join();
  /// Inside a task: time this thread waited for something another thread would wait for too
  /// (Python's GIL), so that the wait does not count as the task blocking.
  static void ExcuseWait(std::chrono::nanoseconds waited);
  /// A running task's excused waits (kept per thread; read by the watcher).
  struct Excuses {
    std::atomic<int64_t> total_ns{0};  // excused waits that ended
    std::atomic<int64_t> since_ns{
        0};  // steady-clock start of the excused wait in progress (0: none)
  };
  using ExcusedWait = prism::ExcusedWait;  // (runtime/process_runtime.h)
  /// Threads running tasks now (for tests and diagnostics).
  int threads();

 private:
  struct Item {
    std::shared_ptr<const rpc::PushTask> push;
    std::shared_ptr<rpc::Connection> from;
  };
  void Watch();
  void RunLoop(bool added);  // Run() for a thread counted in threads_ (`added`: by the watcher)

  Execute execute_;
  ReadNext read_next_;
  AdaptiveSpin gap_spin_;  // the main thread's spin between calls (learns the gap between them)
  int singles_ = 0;        // main thread: calls in a row that came one at a time to an idle thread
  Mutex mu_;
  std::condition_variable cv_;        // tasks queued, or stop
  std::condition_variable watch_cv_;  // wakes the watcher
  std::deque<Item> queue_ PRISM_GUARDED_BY(mu_);
  std::atomic<size_t> queued_{0};  // queue_.size(), for a thread spinning without the lock
  bool stop_ PRISM_GUARDED_BY(mu_) = false;
  int max_threads_ PRISM_GUARDED_BY(mu_) = 1;
  int threads_ PRISM_GUARDED_BY(mu_) = 0;   // in Run()
  int idle_ PRISM_GUARDED_BY(mu_) = 0;      // in Run(), waiting for a task
  int starting_ PRISM_GUARDED_BY(mu_) = 0;  // added by the watcher, not yet running
  int next_slot_ PRISM_GUARDED_BY(mu_) = 0;
  struct Busy {
    std::chrono::steady_clock::time_point since;      // the task started
    std::chrono::steady_clock::time_point cpu_since;  // cpu_at_start_ns was read
    clockid_t cpu_clock;                              // the thread's CPU clock
    int64_t cpu_at_start_ns;           // its CPU time at cpu_since (-1: not read yet)
    std::shared_ptr<Excuses> excused;  // waits that were not blocking (ExcuseWait)
    pid_t tid;                         // the thread, for its scheduling state
    int strikes = 0;                   // the watcher's looks in a row that found the task blocked
  };
  std::map<int, Busy> busy_ PRISM_GUARDED_BY(mu_);
  std::chrono::microseconds patience_{1000};
  std::vector<std::thread> added_;  // started by the watcher (guarded by mu_ while it runs)
  std::thread watcher_;
};

}  // namespace prism

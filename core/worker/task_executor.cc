#include "worker/task_executor.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "base/mutex.h"
#include "base/spin.h"

namespace prism {
namespace {

// The running task's "waited, but not blocked" time (see ExcuseWait).
thread_local TaskExecutor::Excuses* tl_excused = nullptr;

int64_t SteadyNanos(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Whether the thread is asleep in the kernel (waiting for something), rather than running or
// ready to run (merely preempted on a busy machine).
bool Sleeping(pid_t tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* close_paren = strrchr(buf, ')');  // the name may hold spaces and parentheses
  if (close_paren == nullptr || close_paren[1] == '\0') return false;
  char state = close_paren[2];
  return state == 'S' || state == 'D';
}

int64_t CpuNanos(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0;
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

TaskExecutor::TaskExecutor(Execute execute) : execute_(std::move(execute)) {}

TaskExecutor::~TaskExecutor() {
  Stop();
  Join();
}

void TaskExecutor::Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from) {
  Enqueue(std::make_shared<const rpc::PushTask>(std::move(push)), std::move(from));
}

void TaskExecutor::Enqueue(std::shared_ptr<const rpc::PushTask> push,
                           std::shared_ptr<rpc::Connection> from) {
  bool wake_watcher;
  {
    MutexLock lock(mu_);
    // The watcher needs waking only when tasks start to wait; while they do, it looks on its own.
    wake_watcher = queue_.empty() && max_threads_ > 1;
    queue_.push_back(Item{std::move(push), std::move(from)});
    queued_.store(queue_.size(), std::memory_order_release);
  }
  cv_.notify_one();
  if (wake_watcher) watch_cv_.notify_one();
}

void TaskExecutor::Stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watch_cv_.notify_all();
}

void TaskExecutor::AllowThreads(int n, std::chrono::microseconds patience) {
  MutexLock lock(mu_);
  if (n <= max_threads_) return;
  max_threads_ = n;
  patience_ = patience;
  if (!watcher_.joinable()) watcher_ = std::thread([this] { Watch(); });
}

void TaskExecutor::SetThreads(int n, std::chrono::microseconds patience) {
  MutexLock lock(mu_);
  max_threads_ = std::max(1, n);
  patience_ = patience;
  if (max_threads_ > 1 && !watcher_.joinable()) watcher_ = std::thread([this] { Watch(); });
}

void TaskExecutor::Watch() {
  UniqueLock lock(mu_);
  while (!stop_) {
    bool waiting = !queue_.empty() && threads_ < max_threads_;
    if (!waiting) {
      watch_cv_.wait(lock);
      continue;
    }
    // Tasks wait, no thread is free or starting, and every running task has run `patience`
    // already: add a thread. Otherwise look again (wakeups come early too: each check is on
    // the clock, not on how long the wait lasted).
    auto now = std::chrono::steady_clock::now();
    bool stuck = idle_ == 0 && starting_ == 0 && !busy_.empty();
    for (auto& [slot, b] : busy_) {
      if (b.cpu_at_start_ns < 0) {
        // Started before threads were allowed: its CPU time counts from now, judged next look.
        b.cpu_at_start_ns = CpuNanos(b.cpu_clock);
        b.cpu_since = now;
        stuck = false;
        continue;
      }
      auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(now - b.cpu_since).count();
      int64_t excused = b.excused->total_ns.load(std::memory_order_relaxed);
      if (int64_t since = b.excused->since_ns.load(std::memory_order_relaxed); since != 0) {
        excused += SteadyNanos(now) - since;
      }
      int64_t cpu = CpuNanos(b.cpu_clock) - b.cpu_at_start_ns + excused;
      // Long, mostly waiting (not computing, which another thread would only slow down), and
      // asleep now (not just preempted on a busy machine) -- at two looks in a row: a call
      // preempted most of its time on a busy machine, caught in a moment's wait for a lock,
      // looks like that once.
      bool blocked = now - b.since >= patience_ && cpu * 2 < wall && Sleeping(b.tid);
      b.strikes = blocked ? b.strikes + 1 : 0;
      stuck &= b.strikes >= 2;
    }
    if (stuck) {
      threads_++;
      starting_++;
      added_.emplace_back([this] { RunLoop(/*added=*/true); });
      continue;
    }
    watch_cv_.wait_for(lock, patience_);
  }
}

void TaskExecutor::ExcuseWait(std::chrono::nanoseconds waited) {
  if (tl_excused != nullptr)
    tl_excused->total_ns.fetch_add(waited.count(), std::memory_order_relaxed);
}

ExcusedWait::ExcusedWait() : since_(std::chrono::steady_clock::now()) {
  if (tl_excused != nullptr)
    tl_excused->since_ns.store(SteadyNanos(since_), std::memory_order_relaxed);
}

ExcusedWait::~ExcusedWait() {
  if (tl_excused == nullptr) return;
  tl_excused->since_ns.store(0, std::memory_order_relaxed);
  TaskExecutor::ExcuseWait(std::chrono::steady_clock::now() - since_);
}

int TaskExecutor::threads() {
  MutexLock lock(mu_);
  return threads_;
}

void TaskExecutor::Join() {
  if (watcher_.joinable() && watcher_.get_id() != std::this_thread::get_id()) watcher_.join();
  std::vector<std::thread> added;
  {
    MutexLock lock(mu_);
    added.swap(added_);
  }
  for (auto& t : added) {
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  }
}

void TaskExecutor::Run() {
  {
    MutexLock lock(mu_);
    threads_++;
  }
  RunLoop(/*added=*/false);
}

void TaskExecutor::RunLoop(bool added) {
  int slot;
  clockid_t cpu_clock = CLOCK_THREAD_CPUTIME_ID;
  pthread_getcpuclockid(pthread_self(), &cpu_clock);
  auto excused = std::make_shared<Excuses>();
  tl_excused = excused.get();
  const pid_t tid = gettid();
  std::shared_ptr<rpc::Connection> last_from;  // the caller of this thread's last task
  // The connection whose reads this thread claimed (Connection::ClaimReads): from its reply to
  // a caller of single calls until the spin for that caller's next call ends, so that the next
  // call does not wake the loop.
  std::shared_ptr<rpc::Connection> claimed;
  auto release = [&claimed] {
    if (claimed) {
      claimed->ReleaseReads();
      claimed.reset();
    }
  };
  bool spin_next = false;  // this thread's last task came as one of single calls
  {
    MutexLock lock(mu_);
    slot = next_slot_++;
    if (added) starting_--;
  }
  while (true) {
    Item item;
    {
      UniqueLock lock(mu_);
      busy_.erase(slot);
      if (added && threads_ > max_threads_) {  // the limit was lowered (SetThreads)
        threads_--;
        return;
      }
      idle_++;
      if (added) {
        // An added thread idle for a while ends: bursts of blocking calls do not leave threads
        // that then fight over the work (and the GIL) for good.
        bool work = cv_.wait_for(lock, std::chrono::milliseconds(100),
                                 [&]() PRISM_REQUIRES(mu_) { return stop_ || !queue_.empty(); });
        if (!work) {
          idle_--;
          threads_--;
          return;
        }
      } else if (queue_.empty() && !stop_) {
        // Calls that come one at a time (a caller waiting for each reply) come a round trip
        // apart: the next is looked for before sleeping (see base/spin.h), for about twice the
        // typical gap. Calls that come in batches (a pipeline) are not: between batches the
        // CPU is better left to the threads that bring the next one.
        const auto idle_since = std::chrono::steady_clock::now();
        if (singles_ >= 2) {
          lock.unlock();
          // The next call most likely comes from the caller of the last one: it is read here
          // (every few checks: a read is a system call) rather than waited for from the loop.
          // It claims the connection meanwhile, so that the loop is not woken for the call.
          rpc::Connection* caller = read_next_ && last_from != nullptr && !last_from->closed()
                                        ? last_from.get()
                                        : nullptr;
          if (claimed.get() != caller) {
            release();
            if (caller != nullptr) {
              caller->ClaimReads();
              claimed = last_from;
            }
          }
          int checks = 0;
          SpinFor(
              [&] {
                if (queued_.load(std::memory_order_acquire) > 0) return true;
                if (caller == nullptr || ++checks % 8 != 0) return false;
                return read_next_(*caller) || queued_.load(std::memory_order_acquire) > 0;
              },
              gap_spin_.Budget(SpinBudget(SpinRole::kServer)));
          release();
          lock.lock();
        }
        cv_.wait(lock, [&]() PRISM_REQUIRES(mu_) { return stop_ || !queue_.empty(); });
        gap_spin_.Record(std::chrono::steady_clock::now() - idle_since);
        singles_ = queue_.size() == 1 ? singles_ + 1 : 0;
      } else {
        singles_ = 0;  // it found work queued: not one call at a time
      }
      release();  // (claimed for a spin that did not come)
      spin_next = !added && singles_ >= 2;
      idle_--;
      if (stop_) return;
      if (added && threads_ > max_threads_) {  // lowered while this one waited: leave the work
        threads_--;
        cv_.notify_one();
        return;
      }
      item = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_release);
      excused->total_ns.store(0, std::memory_order_relaxed);
      // The thread's CPU clock is a system call (no vDSO): read only where the watcher may
      // add threads (-1: the watcher reads it when it first looks).
      auto now = std::chrono::steady_clock::now();
      busy_[slot] =
          Busy{now, now, cpu_clock, max_threads_ > 1 ? CpuNanos(cpu_clock) : -1, excused, tid};
    }
    if (item.from->closed()) continue;  // its owner is gone; nobody wants the result
    if (!added) last_from = item.from;
    ExecutedTask done = execute_(std::move(item.push), item.from);
    if (done.deferred) continue;
    rpc::Envelope env;
    *env.mutable_task_reply() = std::move(done.reply);
    if (queued_.load(std::memory_order_acquire) > 0) {
      // More tasks wait (a pipeline): the event loop writes the replies in batches, one system
      // call for many, while this thread goes on with the next task.
      item.from->SendBatched(env);
    } else {
      item.from->Send(env);  // the caller may be waiting for just this one: write it now
      // (Claimed after the reply, not before: its next call comes a round trip later.)
      if (spin_next && read_next_ && !item.from->closed()) {
        item.from->ClaimReads();
        claimed = item.from;
      }
    }
    done.hold.reset();  // after the reply: releases it triggers follow it on the connection
  }
}

}  // namespace prism

// The mutex of prism's own code: std::mutex with the annotations clang's thread-safety analysis
// follows (base/thread_annotations.h), and the two ways to hold one. Costs nothing over
// std::mutex and std::lock_guard / std::unique_lock.
#pragma once

#include <chrono>
#include <mutex>

#include "base/spin.h"
#include "base/thread_annotations.h"

namespace prism {

class PRISM_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() PRISM_ACQUIRE() { mu_.lock(); }
  void unlock() PRISM_RELEASE() { mu_.unlock(); }
  bool try_lock() PRISM_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  /// Tells the analysis the caller holds it (where it cannot see that).
  void AssertHeld() const PRISM_ASSERT_CAPABILITY(this) {}
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

/// Holds a mutex for its scope (std::lock_guard).
class PRISM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) PRISM_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() PRISM_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

/// Holds a mutex for its scope, may let it go and take it again, and is what a
/// std::condition_variable waits with (std::unique_lock).
class PRISM_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) PRISM_ACQUIRE(mu) : lock_(mu.native()) {}
  /// Does not take it yet: try_lock() or lock() does.
  UniqueLock(Mutex& mu, std::defer_lock_t) PRISM_EXCLUDES(mu)
      : lock_(mu.native(), std::defer_lock) {}
  ~UniqueLock() PRISM_RELEASE() {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() PRISM_ACQUIRE() { lock_.lock(); }
  void unlock() PRISM_RELEASE() { lock_.unlock(); }
  bool try_lock() PRISM_TRY_ACQUIRE(true) { return lock_.try_lock(); }
  bool owns_lock() const { return lock_.owns_lock(); }
  /// Takes the mutex back: tries for up to `budget`, yielding between tries (its holder is about
  /// to let go, and sleeping on it would cost a wake-up), then blocks.
  void LockSpinning(std::chrono::nanoseconds budget) PRISM_ACQUIRE() {
    if (!SpinFor([&] { return lock_.try_lock(); }, budget)) lock_.lock();
  }
  /// For std::condition_variable's waits.
  operator std::unique_lock<std::mutex>&() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace prism

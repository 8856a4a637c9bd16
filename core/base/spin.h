// Bounded spinning before a thread sleeps: a wake-up through the kernel costs 5-15 us on a VM
// (an idle virtual CPU halts and must be woken by an interrupt), while the answer to a local
// round trip often comes sooner. A waiter that expects one soon checks for it, yielding the CPU
// between checks, for up to the spin budget, and only then sleeps.
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>

namespace prism {

/// Who spins. A caller waits for the reply to its own request; a server (a worker's executor
/// between tasks) waits for the next request, while the caller may spin too.
enum class SpinRole { kCaller, kServer };

/// The process's spin budget: $PRISM_SPIN_US microseconds (0 turns spinning off), 500 by
/// default; it is the most a caller spins, and a server spins at most 250 us of it (see
/// AdaptiveSpin for how much each does). Nothing spins on a machine with one CPU.
std::chrono::nanoseconds SpinBudget(SpinRole role = SpinRole::kCaller);

/// How long a waiter spins, learnt from how long its waits have lasted: about twice a typical
/// wait (so a round trip of 150 us on a slow VM is caught by the spin, not by a wake-up), at
/// least 50 us (so a workload that becomes quick is noticed), and only 50 us while waits
/// typically last longer than the budget (long tasks, or a server whose requests come seldom:
/// spinning would only burn a CPU).
class AdaptiveSpin {
 public:
  /// The spin for the next wait, within SpinBudget(kCaller).
  std::chrono::nanoseconds Budget() const;
  /// The same within `cap`.
  std::chrono::nanoseconds Budget(std::chrono::nanoseconds cap) const;
  /// A wait that was not over at once ended after `waited`.
  void Record(std::chrono::nanoseconds waited);

 private:
  std::atomic<int64_t> typical_ns_{0};  // a moving average; 0 until the first wait
};

/// Checks `ready()` until it holds or `budget` passed, yielding between checks. Returns whether
/// it held.
template <typename Ready>
bool SpinFor(Ready&& ready, std::chrono::nanoseconds budget) {
  if (budget.count() <= 0) return ready();
  const auto end = std::chrono::steady_clock::now() + budget;
  while (true) {
    for (int i = 0; i < 16; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      asm volatile("yield");
#endif
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
    sched_yield();
  }
}

}  // namespace prism

// Bounded spinning before a thread sleeps: a wake-up through the kernel costs 5-15 us on a VM
// (an idle virtual CPU halts and must be woken by an interrupt), while the answer to a local
// round trip often comes sooner. A waiter that expects one soon checks for it, yielding the CPU
// between checks, for up to the spin budget, and only then sleeps.
#pragma once

#include <sched.h>

#include <chrono>

namespace prism {

/// Who spins. A caller waits for the reply to its own request; a server (a worker's executor
/// between tasks) waits for the next request, while the caller may spin too.
enum class SpinRole { kCaller, kServer };

/// The process's spin budget: $PRISM_SPIN_US microseconds (0 turns spinning off), 50 by default.
/// Callers spin on machines with 2 CPUs or more, servers on machines with 4 or more: with two
/// spinners on two CPUs, the threads that carry the request and its reply (the event loops)
/// would wait for a spinner to yield, which costs more than the wake-up the spin saves (measured
/// on a 2-vCPU VM, bench/RESULTS.md).
std::chrono::nanoseconds SpinBudget(SpinRole role = SpinRole::kCaller);

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

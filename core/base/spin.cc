#include "base/spin.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace prism {

std::chrono::nanoseconds SpinBudget(SpinRole role) {
  // The CPUs this process may run on (a container's share, not the host's).
  static const long cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return static_cast<long>(CPU_COUNT(&set));
    return sysconf(_SC_NPROCESSORS_ONLN);
  }();
  static const std::chrono::nanoseconds budget = [] {
    if (const char* env = std::getenv("PRISM_SPIN_US"); env != nullptr && *env != '\0') {
      return std::chrono::nanoseconds(std::max(0L, std::atol(env)) * 1000);
    }
    return std::chrono::nanoseconds(500'000);
  }();
  if (cpus < 2) return std::chrono::nanoseconds(0);
  if (role == SpinRole::kCaller) return budget;
  // A server waits for a request that may not come: it spins at most a typical round trip.
  return std::min<std::chrono::nanoseconds>(budget, std::chrono::microseconds(250));
}

std::chrono::nanoseconds AdaptiveSpin::Budget() const {
  return Budget(SpinBudget(SpinRole::kCaller));
}

std::chrono::nanoseconds AdaptiveSpin::Budget(std::chrono::nanoseconds cap) const {
  const std::chrono::nanoseconds floor =
      std::min<std::chrono::nanoseconds>(cap, std::chrono::microseconds(50));
  const int64_t typical = typical_ns_.load(std::memory_order_relaxed);
  if (typical == 0 || typical > cap.count()) return floor;
  return std::clamp(std::chrono::nanoseconds(2 * typical), floor, cap);
}

void AdaptiveSpin::Record(std::chrono::nanoseconds waited) {
  // An average over the last eight or so waits; a race between two recording threads loses one
  // sample, which does not matter here.
  const int64_t old = typical_ns_.load(std::memory_order_relaxed);
  const int64_t now = old == 0 ? waited.count() : old + (waited.count() - old) / 8;
  typical_ns_.store(std::max<int64_t>(1, now), std::memory_order_relaxed);
}

}  // namespace prism

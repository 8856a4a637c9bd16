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
    return std::chrono::nanoseconds(50'000);
  }();
  const long needed = role == SpinRole::kCaller ? 2 : 4;
  return cpus >= needed ? budget : std::chrono::nanoseconds(0);
}

}  // namespace prism

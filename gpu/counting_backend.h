// A backend that counts what crosses the host: synchronizations (Stream::Synchronize,
// Event::Synchronize) and copies with a host side, around any other backend. Tests use it to
// show that work is chained by events on the device (PRISM_GPU_COUNT_CALLS=1 wraps a process's
// backend); the counts are the wrapper's own, not anything a backend reports about itself.
#pragma once

#include <prism/gpu/backend.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace prism::gpu {

struct CallCounts {
  uint64_t host_syncs = 0;
  uint64_t host_copies = 0;
  uint64_t device_copies = 0;
  uint64_t kernels = 0;
};

/// Wraps `inner`; streams, events and memory it hands out are wrappers too.
std::unique_ptr<Backend> MakeCountingBackend(std::unique_ptr<Backend> inner);
/// The counts of a backend MakeCountingBackend made (nullopt for any other).
std::optional<CallCounts> CountsOf(Backend& backend);

}  // namespace prism::gpu

// Moves a device object's bytes between two processes that do not see each other's GPU: through a
// pair group of the collectives (rank 0 the producer, rank 1 the importer; nccl on CUDA devices,
// gloo on sim devices). The collectives library (libprism_collective.so, beside libprism, which it
// links) is loaded on first use.
#pragma once

#include "base/status.h"

#include <prism/gpu/backend.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace prism {

/// How long one move may take, joining the pair group included.
inline constexpr std::chrono::seconds kDeviceTransferTimeout{30};

/// OK when the collectives library is there to move device objects; else why it is not.
Status DeviceTransferAvailable();

/// Sends (`send`) or receives `bytes` at `ptr` (memory of `device` of `backend`, ordered on
/// `stream`) through pair group `group`. Unavailable with the reason when the library is missing,
/// the group cannot be joined, or the move fails or times out.
Status TransferThroughPairGroup(const std::string& group, bool send, gpu::Backend& backend, int device, void* ptr,
                                uint64_t bytes, gpu::Stream* stream);

}  // namespace prism

// Moves a device object's bytes between two processes that do not see each other's GPU: through a
// pair group of the collectives (rank 0 the producer, rank 1 the importer; nccl on CUDA devices,
// gloo on sim devices). The collectives library (libprism_collective.so, beside libprism, which it
// links) is loaded on first use. DeviceMoves keeps the order of a process's moves: sends queued
// per pair group, receives one at a time per producer.
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/tensor.h>
#include <prism/ids.h>
#include <prism/internal/runtime_api.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace prism {

/// How long one move may take, joining the pair group included.
inline constexpr std::chrono::seconds kDeviceTransferTimeout{30};

/// OK when the collectives library is there to move device objects; else why it is not.
Status DeviceTransferAvailable();

/// Sends (`send`) or receives `bytes` at `ptr` (memory of `device` of `backend`, ordered on
/// `stream`) through pair group `group`. Unavailable with the reason when the library is missing,
/// the group cannot be joined, or the move fails or times out.
Status TransferThroughPairGroup(const std::string& group, bool send, gpu::Backend& backend,
                                int device, void* ptr, uint64_t bytes, gpu::Stream* stream);

/// A process's moves of device objects through pair groups. Any thread.
class DeviceMoves {
 public:
  /// What a send reads: the object's tensor, ordered after the work that made it on `stream`.
  struct Source {
    gpu::Tensor tensor;
    gpu::Stream* stream = nullptr;
    gpu::Backend* backend = nullptr;
    int device = 0;
  };
  /// `source(id)`: the device object to send (its memory stays until the send is done), or why
  /// not. `sent(id, importer)`: a send is over (done or failed): the import it was for ends.
  DeviceMoves(std::function<Result<Source>(const std::string& id)> source,
              std::function<void(const std::string& id, const WorkerId& importer)> sent);

  /// Sends device object `id` to `importer` through pair group `group` (rank 0 here), after the
  /// sends queued for that group before it, on a thread that drains the group's queue.
  void QueueSend(const std::string& id, const WorkerId& importer, const std::string& group);
  /// Waits for queued and running sends to end (not on a draining thread itself).
  void WaitForSends();

  /// Receives device object `id` from `producer` into `into` (on `device` of `backend`, ordered
  /// on `stream`), one move at a time per producer: `request(group)` asks the producer to send
  /// it through `group` (false: it no longer holds it). `what` names the object in errors.
  /// Throws ObjectLostError or RuntimeError.
  void Receive(const internal::OwnerAddress& self, const internal::OwnerAddress& producer,
               int64_t producer_pid, const std::function<bool(const std::string& group)>& request,
               gpu::Backend& backend, int device, gpu::Tensor& into, gpu::Stream* stream,
               const std::string& what);

  struct Stats {
    uint64_t received = 0, received_bytes = 0;
    uint64_t sent = 0, sent_bytes = 0;
  };
  Stats stats();

 private:
  void DrainSends(const std::string& group);
  Status SendNow(const std::string& id, const std::string& group);

  std::function<Result<Source>(const std::string&)> source_;
  std::function<void(const std::string&, const WorkerId&)> sent_;
  Mutex mu_;
  struct SendJob {
    std::string id;
    WorkerId importer;
  };
  // Queued per group, drained by one thread each while non-empty.
  std::map<std::string, std::deque<SendJob>> send_queues_ PRISM_GUARDED_BY(mu_);
  int senders_ PRISM_GUARDED_BY(mu_) = 0;  // draining threads
  std::condition_variable senders_cv_;
  // Receives: one at a time per producer (a pair's sends and receives match in order); the pair
  // group's epoch moves on after a failure (both sides drop the broken group).
  std::map<std::string, std::shared_ptr<Mutex>> receive_locks_ PRISM_GUARDED_BY(mu_);
  std::map<std::string, int> receive_epochs_ PRISM_GUARDED_BY(mu_);
  Stats stats_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism

// What the task submitter needs from the node daemon: worker leases.
#pragma once

#include "base/resources.h"
#include "base/status.h"
#include "prism.pb.h"
#include "rpc/connection.h"

#include <prism/ids.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

namespace prism {

/// A granted lease, or why there is none.
struct LeaseOutcome {
  Status status;               // OK: granted
  rpc::ErrorKind kind = rpc::ERROR_NONE;  // why not (ERROR_INFEASIBLE, ERROR_SYSTEM)
  uint64_t lease_id = 0;
  rpc::Address worker;
};

/// Interface so the submitter can be tested against a fake daemon.
class LeaseClient {
 public:
  virtual ~LeaseClient() = default;
  /// Returns the request's id. `queued` runs if the request has to wait for resources to free
  /// up (the node is saturated); `done` runs once with the outcome. Both on the event loop.
  virtual uint64_t RequestLease(const ResourceSet& shape, std::function<void()> queued,
                                std::function<void(LeaseOutcome)> done) = 0;
  /// Withdraws a request; its callbacks will not run.
  virtual void CancelLeaseRequest(uint64_t request_id) = 0;
  virtual void ReturnLease(uint64_t lease_id, bool worker_failed) = 0;
};

/// The node daemon over its local socket. Event-loop thread only, except construction.
class DaemonClient : public LeaseClient {
 public:
  /// `on_lost` runs once if the daemon's connection closes; `on_worker_died` for each driver or
  /// worker of the node that ended.
  DaemonClient(std::shared_ptr<rpc::Connection> conn, std::function<void(const Status&)> on_lost,
               std::function<void(const WorkerId&)> on_worker_died = nullptr);
  void Start();
  uint64_t RequestLease(const ResourceSet& shape, std::function<void()> queued,
                        std::function<void(LeaseOutcome)> done) override;
  void CancelLeaseRequest(uint64_t request_id) override;
  void ReturnLease(uint64_t lease_id, bool worker_failed) override;
  void Close();

 private:
  void OnMessage(rpc::Envelope& msg);
  void OnClosed(const Status& st);

  std::shared_ptr<rpc::Connection> conn_;
  std::function<void(const Status&)> on_lost_;
  std::function<void(const WorkerId&)> on_worker_died_;
  uint64_t next_request_id_ = 1;
  struct LeaseWaiter {
    std::function<void()> queued;
    std::function<void(LeaseOutcome)> done;
  };
  std::unordered_map<uint64_t, LeaseWaiter> lease_waiters_;
};

}  // namespace prism

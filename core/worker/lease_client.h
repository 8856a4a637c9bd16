// What the task submitter needs from the node daemon: worker leases.
#pragma once

#include <prism/ids.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/mutex.h"
#include "base/resources.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

/// A granted lease, or why there is none.
struct LeaseOutcome {
  Status status;                          // OK: granted
  rpc::ErrorKind kind = rpc::ERROR_NONE;  // why not (ERROR_INFEASIBLE, ERROR_SYSTEM)
  uint64_t lease_id = 0;
  rpc::Address worker;
  std::vector<rpc::DeviceShareProto> devices;  // the device instances it holds
};

/// What a lease is asked for: resources, the worker's environment, and where it may be placed.
struct LeaseSpec {
  ResourceSet shape;
  std::map<std::string, std::string> env;
  rpc::Placement placement;
  /// One task at a time on each such lease, never a pipeline (a streaming task may run for
  /// ever: nothing should wait behind it).
  bool exclusive = false;
  std::string runtime;  // "" or "cpp" (RequestLease.runtime)
  /// Leases of equal keys are interchangeable (tasks of one key share them).
  std::string Key() const;
};

/// Interface so the submitter can be tested against a fake daemon.
class LeaseClient {
 public:
  virtual ~LeaseClient() = default;
  /// Returns the request's id. `queued` runs if the request has to wait for resources to free
  /// up (the node is saturated); `done` runs once with the outcome. Both on the event loop.
  virtual uint64_t RequestLease(const LeaseSpec& spec, std::function<void(bool infeasible)> queued,
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
  /// `initial`: bytes already read from the connection (after the handshake).
  void Start(std::string initial = {});
  uint64_t RequestLease(const LeaseSpec& spec, std::function<void(bool infeasible)> queued,
                        std::function<void(LeaseOutcome)> done) override;
  void CancelLeaseRequest(uint64_t request_id) override;
  void ReturnLease(uint64_t lease_id, bool worker_failed) override;
  void Close();

  /// Any thread: a fresh request id for Call().
  uint64_t NextRequestId() { return next_request_id_.fetch_add(1); }
  /// Any thread: sends `req` (carrying `request_id`); `done` runs on the event loop with the
  /// daemon's answer (an ActorUpdate, or an ErrorReply as a failed status), or the connection's
  /// loss (on the calling thread, at once, when the connection is gone already).
  void Call(uint64_t request_id, rpc::Envelope req,
            std::function<void(Result<rpc::Envelope>)> done);
  /// Any thread: a message that needs no answer.
  void Send(const rpc::Envelope& msg) { conn_->Send(msg); }
  /// Handlers for what the daemon sends unasked: actor updates, and (in a worker) the creation
  /// task of the actor this worker becomes. Set before Start().
  std::function<void(const rpc::ActorUpdate&)> on_actor_update;
  std::function<void(rpc::PushTask, std::shared_ptr<rpc::Connection>)> on_push;
  std::function<void(const rpc::WorkerOutput&)> on_worker_output;

 private:
  void OnMessage(rpc::Envelope& msg);
  void OnClosed(const Status& st);

  std::shared_ptr<rpc::Connection> conn_;
  std::function<void(const Status&)> on_lost_;
  std::function<void(const WorkerId&)> on_worker_died_;
  std::atomic<uint64_t> next_request_id_{1};
  /// The call waiting for the answer to `request_id` (null: none, or 0), taken out of the table.
  std::function<void(Result<rpc::Envelope>)> TakeCall(uint64_t request_id);
  Mutex calls_mu_;  // callers add calls, the loop takes them
  std::unordered_map<uint64_t, std::function<void(Result<rpc::Envelope>)>> calls_
      PRISM_GUARDED_BY(calls_mu_);
  bool calls_closed_ PRISM_GUARDED_BY(calls_mu_) = false;  // the connection went: no call is added
  struct LeaseWaiter {
    std::function<void(bool infeasible)> queued;
    std::function<void(LeaseOutcome)> done;
  };
  std::unordered_map<uint64_t, LeaseWaiter> lease_waiters_;
};

}  // namespace prism

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
  bool lost = false;                           // the daemon's connection went before it answered
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
///
/// A request the daemon spills to another node (LeaseSpillback) goes on to that node's daemon,
/// through the relay (a connection per node, kept); its lease is returned there. Its caller sees
/// one request and one lease as before. Should that node's connection go before it answers, the
/// request goes back to this node's daemon after a pause (which spills it elsewhere or serves it).
class DaemonClient : public LeaseClient {
 public:
  /// `on_lost` runs once if the daemon's connection closes; `on_worker_died` for each driver or
  /// worker of the node that ended.
  DaemonClient(std::shared_ptr<rpc::Connection> conn, std::function<void(const Status&)> on_lost,
               std::function<void(const WorkerId&)> on_worker_died = nullptr);
  /// `initial`: bytes already read from the connection (after the handshake).
  ~DaemonClient() override;
  void Start(std::string initial = {});
  uint64_t RequestLease(const LeaseSpec& spec, std::function<void(bool infeasible)> queued,
                        std::function<void(LeaseOutcome)> done) override;
  void CancelLeaseRequest(uint64_t request_id) override;
  void ReturnLease(uint64_t lease_id, bool worker_failed) override;
  void Close();

  /// How a spilled request reaches another node's daemon: `dial` connects to `daemon` (through
  /// the relay) with a Hello as this job's remote caller. Unset: a spillback fails the request.
  using Dialer = std::function<void(const rpc::Address& daemon,
                                    std::function<void(Result<rpc::Connected>)> done)>;
  void set_remote_dialer(Dialer dial, size_t max_frame_bytes) {
    dial_ = std::move(dial);
    max_frame_bytes_ = max_frame_bytes;
  }
  /// Requests this client sent on to other nodes so far.
  uint64_t spilled_total() const { return spilled_total_; }

  /// Any thread: a fresh request id for Call().
  uint64_t NextRequestId() { return next_request_id_.fetch_add(1); }
  /// Any thread: sends `req` (carrying `request_id`); `done` runs on the event loop with the
  /// daemon's answer (an ActorUpdate, or an ErrorReply as a failed status), or the connection's
  /// loss (on the calling thread, at once, when the connection is gone already).
  void Call(uint64_t request_id, rpc::Envelope req,
            std::function<void(Result<rpc::Envelope>)> done);
  /// Any thread: a message that needs no answer.
  void Send(const rpc::Envelope& msg) { conn_->Send(msg); }
  /// Event loop: a message for another node's daemon (`daemon`; this node's when it names no
  /// other node), over the connection spillback uses. What that daemon sends unasked (actor
  /// updates) comes to this client's handlers. Used to subscribe to an actor whose record is
  /// there: should that connection go, the subscriptions are made again over a new one; when
  /// three reconnections in a row fail, each such actor is reported dead, with why.
  void SendToNode(const rpc::Address& daemon, const rpc::Envelope& msg);
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
    rpc::RequestLease request;  // as sent (what a spillback sends on)
    int tries = 0;              // times it went back to this node after another node was lost
  };
  /// Sends a request under the caller's id (`waiter.request` carries it).
  void SendRequest(uint64_t id, LeaseWaiter waiter);
  std::unordered_map<uint64_t, LeaseWaiter> lease_waiters_;

  // Spillback (see the class comment).
  struct Remote {
    uint64_t generation = 0;
    std::unique_ptr<DaemonClient> client;  // null while connecting
    std::vector<uint64_t> waiting;         // spilled requests waiting for the connection
    std::vector<rpc::Envelope> outbox;     // SendToNode's, waiting for the connection
    std::vector<std::string> subscribed;   // actors (binary ids) subscribed through it
    rpc::Address daemon;                   // where it goes
  };
  // Reconnections in a row to a node after its connection went, to follow its actors again.
  std::map<std::string, int> resubscribe_tries_;
  /// The connection to `daemon`'s node (dialled now if there is none).
  Remote& RemoteFor(const rpc::Address& daemon);
  struct Spilled {
    LeaseWaiter waiter;
    std::string node_address;
    uint64_t generation = 0;  // of the Remote it went to
    uint64_t remote_id = 0;   // its id at that node's daemon (0: not sent there yet)
  };
  void OnSpillback(const rpc::LeaseSpillback& s);
  void SendSpilled(uint64_t id);
  /// That node's connection went (or never came) before it answered: back to this node's daemon
  /// after a pause, or failed after many tries.
  void Respill(uint64_t id, const Status& why);
  void RemoteLost(const std::string& node_address, uint64_t generation, const Status& why);
  Dialer dial_;
  size_t max_frame_bytes_ = 0;
  uint64_t next_generation_ = 1;
  std::map<std::string, Remote> remotes_;          // by node address
  std::unordered_map<uint64_t, Spilled> spilled_;  // by the caller's request id
  // False once this client is gone (its timers' and dials' callbacks check it).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  struct RemoteLease {
    std::string node_address;
    uint64_t generation = 0;
    uint64_t lease_id = 0;  // that daemon's
  };
  // Leases granted by other nodes, under ids of this client's (the top bit set).
  std::unordered_map<uint64_t, RemoteLease> remote_leases_;
  uint64_t next_remote_lease_ = uint64_t{1} << 63;
  uint64_t spilled_total_ = 0;
};

}  // namespace prism

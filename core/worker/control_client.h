// The cluster's control service as a core worker reaches it: the actor directory, placement
// groups and the key-value table. One interface for where that state lives: today the node
// daemon holds it and answers on the worker's daemon connection (DaemonControlClient); in a
// cluster the head's control service will, over gRPC, behind the same interface.
#pragma once

#include <prism/ids.h>
#include <prism/options.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "base/spin.h"
#include "prism.pb.h"
#include "worker/lease_client.h"

namespace prism {

/// Blocking calls, from any thread but the event loop's (they wait for its answer). Errors are
/// the public API's exceptions: RuntimeError when the service is unreachable or does not answer
/// in time, InvalidArgumentError (or InfeasibleError) for a request it refused.
class ControlClient {
 public:
  virtual ~ControlClient() = default;

  // The actor directory. Each returns the actor's state after the request.
  /// Registers a new actor (the service schedules its creation task); `request`'s id is set here.
  virtual rpc::ActorUpdate RegisterActor(rpc::CreateActor request) = 0;
  /// Done once the actor is dead: calls made afterwards know it.
  virtual rpc::ActorUpdate KillActor(const ActorId& id, bool no_restart,
                                     const std::string& reason) = 0;
  virtual rpc::ActorUpdate LookupActor(const std::string& name,
                                       const std::string& ray_namespace) = 0;
  /// The calling actor ends itself, for good: sent, not awaited (the service ends its process).
  virtual void AnnounceExit(const ActorId& id, const std::string& reason) = 0;

  // Placement groups.
  virtual PlacementGroup CreatePlacementGroup(const PlacementGroupOptions& options) = 0;
  /// Whether the group was created within `timeout`.
  virtual bool WaitPlacementGroup(uint64_t id, std::chrono::milliseconds timeout) = 0;
  virtual void RemovePlacementGroup(uint64_t id) = 0;
  virtual PlacementGroup GetPlacementGroup(const std::string& name) = 0;

  // The key-value table. Put and Delete return whether the key existed.
  virtual bool KvPut(const std::string& ns, const std::string& key, const std::string& value,
                     bool overwrite) = 0;
  virtual std::optional<std::string> KvGet(const std::string& ns, const std::string& key) = 0;
  virtual bool KvDelete(const std::string& ns, const std::string& key) = 0;
};

/// The node daemon's status (resources, workers, actors, the object store), asked over a
/// connection of its own, as `prism status` asks it. Throws RuntimeError when it does not answer.
rpc::StatusReply ReadNodeStatus(const std::string& daemon_socket, const std::string& token);
/// The object store's figures in a status, as the public API gives them.
ObjectStoreStats StoreStatsOf(const rpc::StatusReply& status);
/// The node a status describes, as the public API gives it.
std::vector<NodeInfo> NodesOf(const rpc::StatusReply& status);

/// The control service hosted by the node daemon, over the worker's daemon connection.
class DaemonControlClient : public ControlClient {
 public:
  /// `blocked(true)` and `blocked(false)` bracket waits that may last (a task waiting for a
  /// placement group gives its CPUs back meanwhile). `answer_within`: how long a request may go
  /// unanswered before it fails (a wait's own timeout comes on top).
  DaemonControlClient(DaemonClient& daemon, std::function<void(bool)> blocked,
                      std::chrono::milliseconds answer_within = std::chrono::seconds(30));

  rpc::ActorUpdate RegisterActor(rpc::CreateActor request) override;
  rpc::ActorUpdate KillActor(const ActorId& id, bool no_restart,
                             const std::string& reason) override;
  rpc::ActorUpdate LookupActor(const std::string& name, const std::string& ray_namespace) override;
  void AnnounceExit(const ActorId& id, const std::string& reason) override;
  PlacementGroup CreatePlacementGroup(const PlacementGroupOptions& options) override;
  bool WaitPlacementGroup(uint64_t id, std::chrono::milliseconds timeout) override;
  void RemovePlacementGroup(uint64_t id) override;
  PlacementGroup GetPlacementGroup(const std::string& name) override;
  bool KvPut(const std::string& ns, const std::string& key, const std::string& value,
             bool overwrite) override;
  std::optional<std::string> KvGet(const std::string& ns, const std::string& key) override;
  bool KvDelete(const std::string& ns, const std::string& key) override;

 private:
  /// Sends `req` (carrying `request_id`) and waits up to `timeout` for the answer.
  rpc::Envelope Call(uint64_t request_id, rpc::Envelope req, std::chrono::milliseconds timeout);
  rpc::Envelope Call(uint64_t request_id, rpc::Envelope req) {
    return Call(request_id, std::move(req), answer_within_);
  }
  /// A placement-group request of kind `op` in `env`; returns its request id.
  uint64_t NewGroupRequest(rpc::PlacementGroupRequest::Op op, rpc::Envelope* env);
  rpc::KvReply CallKv(rpc::KvRequest::Op op, const std::string& ns, const std::string& key,
                      const std::string& value, bool overwrite);

  DaemonClient& daemon_;
  std::function<void(bool)> blocked_;
  std::chrono::milliseconds answer_within_;
  AdaptiveSpin spin_;  // how long a call looks for its answer before it sleeps
};

}  // namespace prism

// The actor directory: the cluster's actors, their names, states and restarts, and who is told
// when an actor changes. It holds the state and the rules; the node daemon answers the requests
// and finds each actor a process (a lease from its scheduler).
#pragma once

#include <prism/ids.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/resources.h"
#include "base/status.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

struct ActorRecord {
  TaskId id;
  JobId job;
  rpc::TaskSpec spec;  // the creation task, arguments resolved
  ResourceSet shape;
  rpc::Placement placement;
  rpc::ActorState state = rpc::ACTOR_PENDING;
  WorkerId worker;  // its current process, nil while it has none
  std::string socket_path;
  uint32_t num_restarts = 0;
  std::string death_cause;
  bool kill_requested = false;  // Kill(no_restart): do not bring it back
  std::vector<std::weak_ptr<rpc::Connection>> subscribers;

  bool detached() const { return spec.actor_creation().detached(); }
  bool dead() const { return state == rpc::ACTOR_DEAD; }
};

/// On the daemon's event loop.
class ActorDirectory {
 public:
  /// `node`: where actors' processes run (one node today). `on_dead` runs for each actor that
  /// dies, after its subscribers were told.
  ActorDirectory(const NodeId& node, std::function<void(const ActorRecord&)> on_dead);

  struct Created {
    ActorRecord* actor = nullptr;
    bool is_new = false;  // false: a retry of the task that created it, the same actor
  };
  /// Checks a creation request and adds its actor, pending, for `job` (which must be alive to
  /// add one). Fails on a bad request, a name taken in its namespace, or an id of another job.
  Result<Created> Create(const JobId& job, bool job_alive, const rpc::CreateActor& req);

  ActorRecord* Find(const TaskId& id);
  /// `binary`: an actor id as sent; null if it is no id or no actor's.
  ActorRecord* Find(const std::string& binary);
  /// The live actor of this name in this namespace, or null.
  ActorRecord* FindByName(const std::string& ns, const std::string& name);

  /// The actor's constructor ran: it serves calls now.
  void Alive(ActorRecord& a);
  /// The actor ends for good (its name is free again); idempotent.
  void Dead(ActorRecord& a, const std::string& cause);
  /// A kill: with `no_restart`, it is not brought back once its process ends.
  void RequestKill(ActorRecord& a, bool no_restart, const std::string& reason);
  /// Its process is gone. True: it restarts (the caller finds it a new process); false: it is
  /// dead now, or was already.
  bool ProcessDied(const TaskId& id, const std::string& why);

  /// `conn` hears of each change of the actor (once, however often it asks).
  void Subscribe(ActorRecord& a, rpc::Connection& conn);
  /// The same for an actor id as sent, told the actor's state now. An actor this directory never
  /// had is answered as a dead one (its callers must not wait forever).
  void Subscribe(const std::string& binary_id, rpc::Connection& conn);
  /// Sends the actor's state (and address, while alive) to `conn`.
  void SendUpdate(rpc::Connection& conn, const ActorRecord& a, uint64_t request_id) const;

  /// The ids of actors not dead for which `pred` holds.
  std::vector<TaskId> Live(const std::function<bool(const ActorRecord&)>& pred) const;
  const std::map<TaskId, ActorRecord>& all() const { return actors_; }
  /// Adds a line per actor (live and recently dead) to a node's status; `pid_of` names the
  /// process of a worker (0: none).
  /// This node's cluster port ("IP:PORT"), named in the actors' addresses.
  void set_node_address(std::string a) { node_address_ = std::move(a); }
  void Report(rpc::StatusReply* status, const std::function<pid_t(const WorkerId&)>& pid_of) const;

 private:
  static std::string NamespacedName(const std::string& ns, const std::string& name);
  void Publish(ActorRecord& a);

  NodeId node_;
  std::string node_address_;
  std::function<void(const ActorRecord&)> on_dead_;
  std::map<TaskId, ActorRecord> actors_;
  std::map<std::string, TaskId> names_;  // by NamespacedName
  std::deque<TaskId> dead_;              // oldest first; at most kKeptDead are remembered
};

}  // namespace prism

// The lease manager and local scheduler: requests for workers (callers' and the actor
// directory's), the leases granted, and the pass that matches requests to the node's resources
// (or a placement group's bundles) and to idle workers, starting workers where none is idle.
// A request this node should not serve (another node has room, SPREAD, an affinity, labels) is
// answered with a spillback to that node's daemon (node/cluster_policy.h decides).
#pragma once

#include <prism/ids.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "base/resources.h"
#include "base/status.h"
#include "control/placement_groups.h"
#include "node/cluster_policy.h"
#include "node/worker_pool.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

struct LeaseManagerConfig {
  ResourceSet resources;  // the node's, for error messages
  /// A cluster of fixed size: a request no node can ever satisfy fails at once; otherwise it
  /// waits (nodes may join).
  bool fixed_size = true;
  int max_workers = 1;  // workers that share the pool (actors' and blocked ones aside)
};

/// A request for a worker.
struct LeaseRequest {
  std::shared_ptr<rpc::Connection> from;  // null: the daemon's own request, for an actor
  uint64_t request_id = 0;
  JobId job;
  ResourceSet shape;
  bool told_queued = false;
  TaskId actor;                            // non-nil: a process for this actor
  std::map<std::string, std::string> env;  // the worker's environment variables
  std::string env_key;
  rpc::Placement placement;
  std::string runtime;
  bool spilled = false;        // sent here by another node's scheduler
  bool starting_here = false;  // a worker is being started for it here: not placed anew
  std::string starting_key;    // (that worker's key: once none starts, it is placed anew)
};

struct Lease {
  uint64_t id = 0;
  WorkerId worker;
  rpc::Connection* holder = nullptr;  // null: held by the daemon for an actor
  ResourceSet lent;                   // CPUs given back while its worker waits in Get
  Allocation alloc;    // what it took from its pool: its shape, and which device instances
  uint64_t group = 0;  // non-zero: its pool is this placement group's bundle
  int bundle = -1;
  bool blocked = false;  // its worker waits in Get/Wait: it does not count against the worker cap
};

/// On the daemon's event loop.
class LeaseManager {
 public:
  /// What scheduling asks of the rest of the node.
  class Host {
   public:
    virtual ~Host() = default;
    /// Runs before each pass: placement groups that wait reserve their bundles.
    virtual void ReserveGroups() = 0;
    /// Whether the actor still wants a process (it is not dead or gone).
    virtual bool ActorWaits(const TaskId& actor) = 0;
    /// The actor can never be placed: it dies with this cause.
    virtual void ActorUnplaceable(const TaskId& actor, const std::string& why) = 0;
    /// `worker` becomes the actor's process under `lease`: it runs the creation task.
    virtual void ActorPlaced(const TaskId& actor, WorkerPool::Worker& worker, uint64_t lease,
                             const Allocation& alloc) = 0;
    /// Ends a worker's process and removes it (which calls WorkerRemoved and schedules).
    virtual void KillWorker(const WorkerId& id, const std::string& why) = 0;
    /// Runs a pass after `delay` (a worker failed to start: no registration will run one).
    virtual void ScheduleAfter(std::chrono::milliseconds delay) = 0;
    /// The cluster as last heard (this node alone without one).
    virtual const ClusterView& Cluster() = 0;
    /// The same, looked at again now (a node may have joined since the last period's look): for
    /// a request that no node in the view can serve. Rate-limited by the host.
    virtual const ClusterView& FreshCluster() { return Cluster(); }
  };

  LeaseManager(LeaseManagerConfig config, const NodeId& node, ResourcePool& node_pool,
               PlacementGroups& groups, WorkerPool& workers, Host& host);

  /// A caller's request: checked (a bad one is rejected at once), then queued and scheduled.
  void Request(rpc::Connection& conn, const JobId& job, const rpc::RequestLease& req);
  /// Queues the daemon's own request (for an actor's process); the caller schedules.
  void Add(LeaseRequest request) { pending_.push_back(std::move(request)); }
  void Cancel(const rpc::Connection& conn, uint64_t request_id);
  /// A lease given back by its holder; an unknown one is answered with an error.
  void Return(rpc::Connection& conn, const rpc::ReturnLease& ret);
  /// The worker's task waits in Get/Wait (or no longer does): its CPUs are lent back meanwhile.
  void SetBlocked(const WorkerPool::Worker& w, bool blocked);
  /// The worker left the pool: its lease ends (a holder's later return of it is silent).
  void WorkerRemoved(const WorkerPool::Worker& w);
  /// Grants what can be granted now and starts the workers missing.
  void Schedule();
  /// This node's cluster port ("IP:PORT"), named in the workers' addresses it grants.
  void set_node_address(std::string a) { node_address_ = std::move(a); }
  /// No pass runs from now on.
  void Stop() { stopped_ = true; }

  /// The workers whose leases `holder` holds, or that draw from placement group `group`.
  std::vector<WorkerId> WorkersHeldBy(const rpc::Connection* holder) const;
  std::vector<WorkerId> WorkersInGroup(uint64_t group) const;
  size_t active() const { return leases_.size(); }
  uint64_t granted_total() const { return granted_total_; }
  uint64_t spilled_total() const { return spilled_total_; }
  /// What requests waiting for the workers started for them will take (they fit: their
  /// resources are taken once those workers register).
  ResourceSet promised_to_starting() const;
  const std::deque<LeaseRequest>& pending() const { return pending_; }

 private:
  /// What a lease gives back when it ends (less what it lent while blocked).
  void Release(const Lease& lease);
  /// The pool a lease draws from: the node's, or its bundle's (null once the group is gone).
  ResourcePool* PoolOf(const Lease& lease);
  /// Whether the worker's task waits in Get/Wait now.
  bool IsBlocked(const WorkerPool::Worker& w) const;
  void Reject(rpc::Connection& conn, uint64_t request_id, rpc::ErrorKind kind,
              const std::string& why);
  /// Tells a caller, once, that its request waits (it then pipelines deeper on what it holds);
  /// `infeasible`: because no node of this growable cluster can serve it yet.
  void TellQueued(LeaseRequest& req, bool infeasible = false);
  /// Starts workers for requests that fit but found none idle (or kills an idle one of another
  /// job to make room, which schedules again). False when a start failed: another pass must run
  /// (no worker will register to trigger one), after a pause that doubles with the job's
  /// failures, until they reject its requests.
  struct Want {
    int count = 0;
    std::map<std::string, std::string> env;
    std::string runtime;
    std::vector<int> gpus;
  };
  bool StartWanted(std::map<std::pair<JobId, std::string>, Want>& wanting, int* failures);

  /// Where the policy sends `req` (this node's free resources less `promised` to the workers
  /// this pass starts). May answer the caller (spillback, rejection) and return false: the
  /// request is done with. True: it stays with this node.
  bool PlaceInCluster(LeaseRequest& req, const ResourceSet& promised, bool* waits);
  /// Why an actor's request cannot be served by this node (empty: it can). Actors are placed on
  /// their creator's node; an affinity or labels that rule it out fail the actor clearly.
  std::string ActorElsewhere(const LeaseRequest& req);
  /// The view's nodes, less what was sent to each that its reports do not count yet.
  void RefreshNodes(const ClusterView& view);

  LeaseManagerConfig config_;
  NodeId node_;
  ClusterPolicy policy_;
  // What this node sent to other nodes since the view was last refreshed (their free resources
  // as last heard do not show it yet).
  uint64_t debt_version_ = 0;
  std::vector<rpc::NodeInfo> view_nodes_;
  // What this node sent to each node (by id), and how many of its reports the view had heard
  // then: deducted from its free resources until a report two later (one made after those
  // requests arrived) is in the view.
  struct Debt {
    ResourceSet sent;
    uint64_t reports = 0;
  };
  std::map<std::string, Debt> debts_;
  uint64_t spilled_total_ = 0;
  std::string node_address_;  // this node's cluster port, in the workers' addresses
  ResourcePool& node_pool_;
  PlacementGroups& groups_;
  WorkerPool& workers_;
  Host& host_;
  bool stopped_ = false;
  std::deque<LeaseRequest> pending_;
  std::map<uint64_t, Lease> leases_;
  // Leases that ended here while a caller held them (their worker died); its return is silent.
  std::unordered_set<uint64_t> dropped_;
  std::deque<uint64_t> dropped_order_;
  uint64_t next_id_ = 1;
  uint64_t granted_total_ = 0;
};

}  // namespace prism

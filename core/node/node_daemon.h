// The node daemon: the process that serves one node's connections. It wires the node's parts
// (the worker pool, the lease manager and local scheduler, the object store's service) and, on
// the head node, the control service's (the actor directory, placement groups, the key-value
// table, the node and job tables). Single-threaded: everything runs on one io_context.
#pragma once

#include <prism/gpu/topology.h>
#include <prism/ids.h>

#include <asio.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/resources.h"
#include "base/status.h"
#include "control/actor_directory.h"
#include "control/control_store.h"
#include "control/placement_groups.h"
#include "node/disk_io.h"
#include "node/lease_manager.h"
#include "node/node_cluster.h"
#include "node/store_service.h"
#include "node/worker_launcher.h"
#include "node/worker_pool.h"
#include "object_store/object_store.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

struct NodeDaemonConfig {
  std::string session_dir;  // holds daemon.sock and the processes' sockets
  std::string token;
  ResourceSet resources;
  /// A cluster of fixed size (the embedded default): a request no node can ever satisfy fails
  /// at once. Otherwise it waits, since nodes may join.
  bool fixed_size = true;
  int lifeline_fd = -1;  // EOF on it stops the daemon (the embedding driver died or left)
  int ready_fd = -1;     // one byte is written here once the daemon accepts connections
  bool remove_session_dir = true;
  size_t max_frame_bytes = rpc::kDefaultMaxFrameBytes;
  int max_workers = 0;  // 0: 4 x CPUs + 4
  std::chrono::milliseconds worker_register_timeout{30000};
  /// A connection that has not sent Hello by then is closed.
  std::chrono::milliseconds hello_timeout{10000};
  /// After this many workers of one job die before registering, its lease requests fail.
  int max_worker_start_failures = 3;
  std::string log_level;
  /// The host object store's size in bytes; 0: DefaultObjectStoreCapacity().
  uint64_t object_store_memory = 0;
  /// Allocate the object store's pages at start (ObjectStoreConfig::prefault).
  bool object_store_prefault = false;
  /// The node's GPU topology (a profile or discovered): GPUs are placed by how they are connected
  /// and workers pinned to their GPUs' NUMA node. None: GPUs are counted only.
  std::optional<gpu::Topology> gpu_topology;
  /// How GPU workers load the same topology ($PRISM_GPU_TOPOLOGY): a profile's name or path;
  /// empty when it was discovered (they discover it too).
  std::string gpu_topology_spec;
  /// Where the node sits in a cluster (its address and port, the head it joins, its labels).
  ClusterConfig cluster;
};

/// The socket a daemon listens on inside its session directory.
std::string DaemonSocketPath(const std::string& session_dir);

class NodeDaemon : private LeaseManager::Host {
 public:
  NodeDaemon(asio::io_context& io, NodeDaemonConfig config, WorkerLauncher& launcher);
  ~NodeDaemon() override;
  Status Start();
  /// Stops workers, closes connections and removes the session's files. Idempotent.
  void Stop();
  const NodeId& node_id() const { return node_id_; }

 private:
  using Job = WorkerPool::Job;
  using Worker = WorkerPool::Worker;
  // What a connection is, once its Hello was accepted.
  struct Peer {
    rpc::Role role = rpc::ROLE_UNSPECIFIED;
    JobId job;
    WorkerId worker;                         // drivers and workers
    ObjectStore::ClientId store_client = 0;  // non-zero: this connection uses the object store
  };

  void Accept();
  void WatchLifeline();
  void WatchSignals();
  void OnMessage(rpc::Connection& conn, rpc::Envelope& msg);
  /// The actor directory's and the placement groups' requests (and the key-value table's):
  /// false if `msg` is none of those.
  bool OnControlMessage(rpc::Connection& conn, const Peer& peer, rpc::Envelope& msg);
  void OnClosed(rpc::Connection& conn, const Status& why);
  static bool IsLocalProcess(const Peer& p) {
    return p.role == rpc::ROLE_DRIVER || p.role == rpc::ROLE_WORKER;
  }
  /// What another node's process (ROLE_REMOTE_CALLER) may send: leases, and following actors.
  static bool RemoteCallerMay(rpc::Envelope::BodyCase kind) {
    switch (kind) {
      case rpc::Envelope::kRequestLease:
      case rpc::Envelope::kCancelLeaseRequest:
      case rpc::Envelope::kReturnLease:
      case rpc::Envelope::kSubscribeActor:
      case rpc::Envelope::kGetActorByName:
      case rpc::Envelope::kStatusRequest:
        return true;
      default:
        return false;
    }
  }
  /// A lease request of another node's process (spillback) for `job`: served once this node
  /// knows the job (the control service's job table describes it; node_daemon_guests.cc).
  void GuestLeaseRequest(rpc::Connection& conn, const JobId& job, const rpc::RequestLease& req);
  /// The job table's answer for a guest job: its requests go on, or are refused with why.
  /// `tries`: lookups so far (a job its driver's node registers from its link's thread may not
  /// be in the table yet: NotFound is asked again a few times).
  void GuestJobArrived(const JobId& job, Result<rpc::JobInfo> info, int tries);
  /// A guest job's workers' output: to its driver, over the connection the driver opened to this
  /// node (spillback), each line's label naming this node's address. Dropped when the driver has
  /// none (only its workers sent work here).
  void ForwardGuestOutput(const Job& job, rpc::Envelope& msg);
  /// The cluster as last heard: the scheduler's view (on each period's tick, which then schedules
  /// what waits).
  void RefreshClusterView();
  void UpdateClusterView();
  Status HandleHello(rpc::Connection& conn, const rpc::Hello& hello, rpc::Welcome* welcome);
  void SendStatus(rpc::Connection& conn, uint64_t request_id);
  /// A job as the control service's job table holds it.
  rpc::JobInfo JobInfoOf(const Job& job, pid_t driver_pid) const;
  /// What the node has free now, for its report to the control service.
  void FillReport(rpc::HeartbeatRequest* report) const;
  void Schedule() { leases_.Schedule(); }
  /// A worker left the pool (it ended, or was killed): its lease, its actor and its connection
  /// go, and the node schedules again.
  void RemoveWorker(const WorkerId& id, const std::string& why);
  void FinishJob(const JobId& id);
  void HandleCreateActor(rpc::Connection& conn, const Peer& peer, const rpc::CreateActor& req);
  void HandleActorCreated(const Peer& peer, const rpc::TaskReply& reply);
  void HandleKillActor(const rpc::KillActor& req);
  /// Asks for a process for the actor (its first, or one to restart it in).
  void RequestActorProcess(const ActorRecord& a);
  void HandleCreatePlacementGroup(rpc::Connection& conn, const Peer& peer,
                                  const rpc::CreatePlacementGroup& req);
  void HandlePlacementGroupRequest(rpc::Connection& conn, const Peer& peer,
                                   const rpc::PlacementGroupRequest& req);
  /// Ends a group: its reservation goes back, its tasks' workers and its actors are ended.
  void RemovePlacementGroup(uint64_t id, const std::string& why);
  /// A job whose driver left ends for good once none of its detached actors lives.
  void MaybeEraseJob(const JobId& id);
  /// A driver or worker ended: its objects go, and every core worker hears of it.
  void WorkerGone(const WorkerId& id);
  /// A worker of this daemon (starting or registered), or a connected driver.
  bool IsAlive(const WorkerId& id) const;

  // LeaseManager::Host
  /// Reserves the bundles of groups that wait, where the node has room for all of a group's, and
  /// answers those waiting for them.
  void ReserveGroups() override;
  bool ActorWaits(const TaskId& actor) override;
  void ActorUnplaceable(const TaskId& actor, const std::string& why) override;
  void ActorPlaced(const TaskId& actor, Worker& worker, uint64_t lease,
                   const Allocation& alloc) override;
  /// SIGKILLs a worker (if it is still known) and removes it. Safe for ids already removed.
  void KillWorker(const WorkerId& id, const std::string& why) override;
  void ScheduleAfter(std::chrono::milliseconds delay) override;
  /// The view, looked at anew when the cluster's nodes changed since (a report came back).
  const ClusterView& Cluster() override;
  const ClusterView& FreshCluster() override;

  asio::io_context& io_;
  NodeDaemonConfig config_;
  NodeId node_id_;
  std::string socket_path_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;
  std::unique_ptr<asio::posix::stream_descriptor> lifeline_;
  asio::signal_set signals_;
  bool stopped_ = false;

  ControlStore control_;
  std::unique_ptr<NodeCluster> cluster_;
  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<StoreService> store_service_;  // the store's requests (goes before store_)
  std::unique_ptr<DiskIoThread>
      disk_;  // the store's spills and restores (Stop() ends it before store_ goes)
  ObjectStore::ClientId next_store_client_ = 1;
  ResourcePool node_pool_;
  Status pool_status_;  // why the configured resources are no node's (checked by Start)
  PlacementGroups groups_{node_pool_, config_.resources.ToString(),
                          config_.gpu_topology.has_value()};
  ActorDirectory actors_;
  WorkerPool workers_;
  LeaseManager leases_;
  std::map<std::shared_ptr<rpc::Connection>, Peer> conns_;
  ClusterView view_;
  uint64_t view_source_ = ~uint64_t{0};  // the cluster's nodes_version() the view was made from
  std::chrono::steady_clock::time_point view_updated_;
  // Guest jobs being looked up in the control service's job table, and the requests waiting.
  struct GuestRequest {
    std::weak_ptr<rpc::Connection> from;
    rpc::RequestLease req;
  };
  std::map<JobId, std::vector<GuestRequest>> guests_waiting_;
  std::unique_ptr<asio::steady_timer> retry_timer_;  // ScheduleAfter's (one pending at a time)
};

/// Runs a daemon until it is stopped (signal, lifeline, `prism stop`). Returns an exit code.
int RunNodeDaemon(NodeDaemonConfig config);

}  // namespace prism

// The node daemon: resource accounting, the local scheduler (worker leases), the worker pool,
// and, on the head node, the control store. Single-threaded: everything runs on one io_context.
#pragma once

#include "base/resources.h"
#include "base/status.h"
#include "control/control_store.h"
#include "control/kv_table.h"
#include "control/placement_groups.h"
#include "node/worker_launcher.h"
#include "node/disk_io.h"
#include "node/store_service.h"
#include "object_store/object_store.h"
#include "prism.pb.h"
#include "rpc/connection.h"

#include <prism/gpu/topology.h>
#include <prism/ids.h>

#include <asio.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

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
};

/// The socket a daemon listens on inside its session directory.
std::string DaemonSocketPath(const std::string& session_dir);

class NodeDaemon {
 public:
  NodeDaemon(asio::io_context& io, NodeDaemonConfig config, WorkerLauncher& launcher);
  ~NodeDaemon();
  Status Start();
  /// Stops workers, closes connections and removes the session's files. Idempotent.
  void Stop();
  const NodeId& node_id() const { return node_id_; }

 private:
  enum class WorkerState { kStarting, kIdle, kLeased };
  struct Job {
    JobId id;
    int exe_fd = -1;
    std::string build_id;
    std::vector<std::string> argv, env;
    std::vector<std::string> code_search_path;
    std::string python_executable;
    std::string exe_path;  // the driver's executable, for a launch prefix to run
    std::vector<std::string> launch_prefix;
    bool timeline = false;  // its workers record task events
    std::string cwd;
    rpc::Connection* driver = nullptr;
    bool ended = false;  // its driver left; kept while its detached actors live
    int start_failures = 0;
    std::string last_start_failure;
    bool start_failure_final = false;  // the reason is known for sure: keep it
  };
  struct Worker {
    WorkerId id;
    JobId job;
    pid_t pid = -1;      // the process the daemon forked
    pid_t process = -1;  // the process that registered: pid, or its descendant under a launch prefix
    WorkerState state = WorkerState::kStarting;
    std::shared_ptr<rpc::Connection> conn;
    std::string socket_path;
    uint64_t lease_id = 0;
    TaskId actor;  // the actor this worker hosts (nil: none)
    std::string env_key;  // the environment variables (and runtime) it was started with
    std::string runtime;  // "" (the job's own executable) or "cpp" (the generic C++ worker)
    std::unique_ptr<asio::steady_timer> register_timer;
  };
  struct Actor {
    TaskId id;
    JobId job;
    rpc::TaskSpec spec;  // the creation task, arguments resolved
    ResourceSet shape;
    rpc::Placement placement;
    rpc::ActorState state = rpc::ACTOR_PENDING;
    WorkerId worker;     // its current process, nil while it has none
    std::string socket_path;
    uint32_t num_restarts = 0;
    std::string death_cause;
    bool kill_requested = false;  // Kill(no_restart): do not bring it back
    std::vector<std::weak_ptr<rpc::Connection>> subscribers;
  };
  struct Lease {
    uint64_t id;
    WorkerId worker;
    rpc::Connection* holder;  // null: held by the daemon for an actor
    ResourceSet lent;         // CPUs given back while its worker waits in Get
    Allocation alloc;         // what it took from its pool: its shape, and which device instances
    uint64_t group = 0;       // non-zero: its pool is this placement group's bundle
    int bundle = -1;
    bool blocked = false;     // its worker waits in Get/Wait: it does not count against the worker cap
  };
  /// What a lease gives back when it ends (less what it lent while blocked).
  void ReleaseLease(const Lease& lease);
  /// The pool a lease draws from: the node's, or its bundle's (null once the group is gone).
  ResourcePool* PoolOf(const Lease& lease);
  static std::string NamespacedName(const std::string& ns, const std::string& name);
  /// Whether the worker's task waits in Get/Wait now.
  bool IsBlocked(const Worker& w) const;
  struct LeaseRequest {
    std::shared_ptr<rpc::Connection> from;
    uint64_t request_id;
    JobId job;
    ResourceSet shape;
    bool told_queued = false;
    TaskId actor;  // non-nil: the daemon's own request, for this actor's process (`from` is null)
    std::map<std::string, std::string> env;  // the worker's environment variables
    std::string env_key;
    rpc::Placement placement;
    std::string runtime;
  };
  // What a connection is, once its Hello was accepted.
  struct Peer {
    rpc::Role role = rpc::ROLE_UNSPECIFIED;
    JobId job;
    WorkerId worker;             // drivers and workers
    ObjectStore::ClientId store_client = 0;  // non-zero: this connection uses the object store
  };

  void Accept();
  void WatchLifeline();
  void WatchSignals();
  void OnMessage(rpc::Connection& conn, rpc::Envelope& msg);
  void OnClosed(rpc::Connection& conn, const Status& why);
  Status HandleHello(rpc::Connection& conn, const rpc::Hello& hello, rpc::Welcome* welcome);
  void HandleRequestLease(rpc::Connection& conn, const Peer& peer, const rpc::RequestLease& req);
  void HandleReturnLease(rpc::Connection& conn, const rpc::ReturnLease& ret);
  void SendStatus(rpc::Connection& conn, uint64_t request_id);
  void SendError(rpc::Connection& conn, uint64_t request_id, const Status& st);
  void RejectLease(rpc::Connection& conn, uint64_t request_id, rpc::ErrorKind kind,
                   const std::string& why);
  /// Tells a caller, once, that its request waits (it then pipelines deeper on what it holds).
  void TellQueued(LeaseRequest& req);
  void Schedule();
  void StartWorker(Job& job, const std::map<std::string, std::string>& env, const std::string& env_key,
                   const std::string& runtime, const std::vector<int>& gpus);
  /// The environment a worker bound to `gpus` gets (CUDA_VISIBLE_DEVICES, ...).
  std::map<std::string, std::string> GpuWorkerEnv(const std::vector<int>& gpus) const;
  void OnChildExit(pid_t pid, int wait_status);
  void RemoveWorker(const WorkerId& id, const std::string& why);
  /// SIGKILLs a worker (if it is still known) and removes it. Safe for ids already removed.
  void KillWorker(const WorkerId& id, const std::string& why);
  void ReapChildren();
  void FinishJob(const JobId& id);
  void HandleCreateActor(rpc::Connection& conn, const Peer& peer, const rpc::CreateActor& req);
  void HandleActorCreated(const Peer& peer, const rpc::TaskReply& reply);
  void HandleKillActor(const rpc::KillActor& req);
  void HandleCreatePlacementGroup(rpc::Connection& conn, const Peer& peer, const rpc::CreatePlacementGroup& req);
  void HandlePlacementGroupRequest(rpc::Connection& conn, const Peer& peer, const rpc::PlacementGroupRequest& req);
  /// Reserves the bundles of groups that wait, where the node has room for all of a group's, and
  /// answers those waiting for them.
  void ReservePlacementGroups();
  /// Ends a group: its reservation goes back, its tasks' workers and its actors are ended.
  void RemovePlacementGroup(uint64_t id, const std::string& why);
  void SendActorUpdate(rpc::Connection& conn, const Actor& a, uint64_t request_id);
  void PublishActor(Actor& a);
  void Subscribe(Actor& a, rpc::Connection& conn);
  /// The actor's process is gone: restart it, or declare it dead.
  void OnActorProcessDied(const TaskId& id, const std::string& why);
  void ActorDead(Actor& a, const std::string& cause);
  /// A job whose driver left ends for good once none of its detached actors lives.
  void MaybeEraseJob(const JobId& id);
  /// A driver or worker ended: its objects go, and every core worker hears of it.
  void WorkerGone(const WorkerId& id);
  /// A worker of this daemon (starting or registered), or a connected driver.
  bool IsAlive(const WorkerId& id) const;

  asio::io_context& io_;
  NodeDaemonConfig config_;
  WorkerLauncher& launcher_;
  NodeId node_id_;
  std::string socket_path_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;
  std::unique_ptr<asio::posix::stream_descriptor> lifeline_;
  asio::signal_set signals_;
  bool stopped_ = false;

  ControlStore control_;
  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<StoreService> store_service_;  // the store's requests (goes before store_)
  std::unique_ptr<DiskIoThread> disk_;  // the store's spills and restores (Stop() ends it before store_ goes)
  ObjectStore::ClientId next_store_client_ = 1;
  ResourcePool node_pool_;
  int self_exe_fd_ = -1;  // this daemon's executable (the prism tool): the generic C++ worker
  std::string self_build_id_;
  Status pool_status_;  // why the configured resources are no node's (checked by Start)
  std::vector<std::string> visible_devices_;  // the daemon's own CUDA_VISIBLE_DEVICES, if set
  KvTable kv_;  // functions exported by Python drivers, rendezvous data
  PlacementGroups groups_{node_pool_, config_.resources.ToString(), config_.gpu_topology.has_value()};
  std::map<std::shared_ptr<rpc::Connection>, Peer> conns_;
  std::map<JobId, Job> jobs_;
  std::unordered_map<WorkerId, Worker> workers_;
  std::unordered_map<pid_t, WorkerId> worker_pids_;
  std::map<uint64_t, Lease> leases_;
  // Leases that ended here while a caller held them (their worker died); its return is silent.
  std::unordered_set<uint64_t> dropped_leases_;
  std::deque<uint64_t> dropped_order_;
  std::map<TaskId, Actor> actors_;
  std::map<std::string, TaskId> actor_names_;  // by NamespacedName
  std::deque<TaskId> dead_actors_;  // oldest first; at most kKeptDeadActors are remembered
  std::deque<LeaseRequest> pending_;
  uint64_t next_lease_id_ = 1;
  uint64_t leases_granted_total_ = 0;
  uint64_t workers_started_total_ = 0;
};

/// Runs a daemon until it is stopped (signal, lifeline, `prism stop`). Returns an exit code.
int RunNodeDaemon(NodeDaemonConfig config);

}  // namespace prism

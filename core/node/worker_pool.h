// The node's worker pool: the jobs whose workers this node starts (what their workers run, and
// how often starting them failed), and the worker processes, from their start through their
// registration to their end. Which worker runs what is the lease manager's business.
#pragma once

#include <prism/gpu/topology.h>
#include <prism/ids.h>

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cluster.pb.h"
#include "node/worker_launcher.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

struct WorkerPoolConfig {
  std::string session_dir;
  std::string token;
  std::string log_level;
  std::chrono::milliseconds register_timeout{30000};
  /// After this many workers of one job die before registering, its requests fail.
  int max_start_failures = 3;
  const gpu::Topology* gpu_topology = nullptr;  // pins GPU workers to their GPUs' NUMA node
  std::string gpu_topology_spec;                // $PRISM_GPU_TOPOLOGY for GPU workers
};

/// On the daemon's event loop.
class WorkerPool {
 public:
  enum class State { kStarting, kIdle, kLeased };
  /// A job as this node runs it: where its workers come from.
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
    /// Its driver is on another node (work spilled here): the control service's job table
    /// described it, and says when it ends.
    bool guest = false;
    std::string no_executable;  // a guest whose driver's executable is not on this node: why
    WorkerId driver_worker;     // the driver's worker id (its workers' output goes to it)
    int start_failures = 0;
    std::string last_start_failure;
    bool start_failure_final = false;  // the reason is known for sure: keep it
  };
  struct Worker {
    WorkerId id;
    JobId job;
    pid_t pid = -1;  // the process the daemon forked
    pid_t process =
        -1;  // the process that registered: pid, or its descendant under a launch prefix
    State state = State::kStarting;
    std::shared_ptr<rpc::Connection> conn;
    std::string socket_path;
    uint64_t lease_id = 0;
    TaskId actor;         // the actor this worker hosts (nil: none)
    std::string env_key;  // the environment variables (and runtime) it was started with
    std::string runtime;  // "" (the job's own executable) or "cpp" (the generic C++ worker)
    std::unique_ptr<asio::steady_timer> register_timer;
  };

  WorkerPool(asio::io_context& io, WorkerLauncher& launcher, WorkerPoolConfig config);
  ~WorkerPool();
  /// Opens this process's executable (the generic C++ worker).
  void Open();

  /// A driver's job, from its Hello: its executable (opened now), arguments, environment and
  /// working folder (read from /proc), and what its workers run. It has no id yet.
  static Result<Job> JobOf(pid_t driver_pid, const rpc::Hello& hello);
  /// A guest job (its driver on another node), as the control service's job table describes it:
  /// its workers run the driver's executable from the same path on this machine (their build id
  /// is checked when they register), or the generic C++ worker, or its Python interpreter.
  static Job GuestJobOf(const rpc::JobInfo& info);
  void AddJob(Job job);
  Job* FindJob(const JobId& id);
  bool HasJob(const JobId& id) const { return jobs_.count(id) > 0; }
  const std::map<JobId, Job>& jobs() const { return jobs_; }
  /// Forgets a job (its executable is closed).
  void EraseJob(const JobId& id);
  bool CanStartCpp() const { return self_exe_fd_ >= 0; }
  /// After this many workers of a job fail to start, its requests fail.
  int max_start_failures() const { return config_.max_start_failures; }

  /// Starts a worker for `job`, bound to `gpus` (none: any). A failure to start is counted
  /// against the job: false.
  bool Start(Job& job, const std::map<std::string, std::string>& env, const std::string& env_key,
             const std::string& runtime, const std::vector<int>& gpus);
  /// A started worker's Hello from `peer_pid` on `conn`: it is idle now. Its worker id.
  Result<WorkerId> Register(const rpc::Hello& hello, pid_t peer_pid,
                            std::shared_ptr<rpc::Connection> conn);
  Worker* Find(const WorkerId& id);
  /// An idle worker of this job started with this environment, or null.
  Worker* FindIdle(const JobId& job, const std::string& env_key);
  int Starting(const JobId& job, const std::string& env_key) const;
  std::unordered_map<WorkerId, Worker>& all() { return workers_; }
  const std::unordered_map<WorkerId, Worker>& all() const { return workers_; }
  uint64_t started_total() const { return started_total_; }

  /// SIGKILLs the worker's processes (not yet removed: its exit is reaped as usual).
  void Signal(const WorkerId& id);
  /// Takes the worker out of the pool (its register timer stopped); nothing if it is unknown.
  std::optional<Worker> Take(const WorkerId& id);
  /// Reaps ended children; `exited(id, how)` runs for each that was one of the pool's workers.
  /// A worker that ended before it registered counts against its job.
  void Reap(const std::function<void(const WorkerId&, const std::string&)>& exited);
  /// Ends every worker (SIGTERM, two seconds, SIGKILL), removes their sockets and forgets the
  /// jobs. The pool is empty after.
  void StopAll();

 private:
  /// The environment a worker bound to `gpus` gets (CUDA_VISIBLE_DEVICES, ...).
  std::map<std::string, std::string> GpuWorkerEnv(const std::vector<int>& gpus) const;

  asio::io_context& io_;
  WorkerLauncher& launcher_;
  WorkerPoolConfig config_;
  int self_exe_fd_ = -1;  // this daemon's executable (the prism tool): the generic C++ worker
  std::string self_build_id_;
  std::vector<std::string> visible_devices_;  // the daemon's own CUDA_VISIBLE_DEVICES, if set
  std::map<JobId, Job> jobs_;
  std::unordered_map<WorkerId, Worker> workers_;
  std::unordered_map<pid_t, WorkerId> worker_pids_;
  uint64_t started_total_ = 0;
};

}  // namespace prism

// Options for prism::Init() and for tasks.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace prism {

/// How prism::Init() finds or starts its cluster.
struct InitOptions {
  /// Empty: start an embedded node daemon (a child process) that lives as long as this driver.
  /// "auto" or a session directory: join a daemon started by `prism start --head`.
  std::string address;
  /// CPUs the embedded daemon offers; 0 means the machine's hardware threads.
  double num_cpus = 0;
  /// Bytes of the embedded daemon's shared-memory object store; 0 means 30% of the machine's
  /// memory (or of the container's memory limit, when lower). Only what objects use takes memory;
  /// beyond it, objects spill to disk.
  uint64_t object_store_memory = 0;
  /// Allocate all of the embedded daemon's object store at start (`prism start
  /// --object-store-prefault`): no put then waits for the kernel to find and zero fresh pages
  /// (~13 us a page on some VMs), at the price of the whole store's memory from the start.
  bool object_store_prefault = false;
  /// Bytes of memory the embedded daemon offers to tasks and actors that ask for some; 0 means the
  /// machine's memory less the object store.
  uint64_t memory = 0;
  /// GPUs the embedded daemon offers (device instances 0..num_gpus-1). -1: the GPUs of
  /// gpu_topology, or else those NVML finds (none without a driver); 0: none.
  int num_gpus = -1;
  /// The node's GPU topology: a shipped profile ("h100-sxm-8", "pcie-8-2numa", "nvlink-pairs-4")
  /// or a JSON file; GPUs are placed by it. Empty: $PRISM_GPU_TOPOLOGY, or else discovered.
  /// With PRISM_GPU_BACKEND=sim, workers run the profile's GPUs as simulated devices.
  std::string gpu_topology;
  /// Custom resources the embedded daemon offers, e.g. {{"accelerator", 2}}.
  std::map<std::string, double> resources;
  /// How this driver's workers start: empty runs the driver's own executable again with its own
  /// arguments (code before Init() runs, then Init() becomes the worker loop). Otherwise the
  /// driver's executable runs with these arguments (the Python package passes
  /// {"python3", "-m", "prism._worker"}).
  std::vector<std::string> worker_argv;
  /// Folders of shared libraries holding C++ remote functions (PRISM_REMOTE): the generic C++
  /// worker loads every `*.so` in them, for tasks run with TaskOptions::runtime = "cpp" (a Python
  /// driver calling a C++ function by name, or a C++ driver calling one it does not link).
  std::vector<std::string> code_search_path;
  /// The Python interpreter that runs Python functions called by name from C++
  /// (prism::PyFunction, TaskOptions::runtime = "python"); empty: "python3" on PATH. Its workers
  /// import the prism package, so it must be importable there (e.g. TaskOptions::env PYTHONPATH).
  std::string python_executable;
  /// A command that starts each of this job's workers, with the worker's executable and
  /// arguments after it: e.g. {"nsys", "profile", "-o", "/tmp/worker-%p"} runs every worker under
  /// Nsight Systems. Empty: $PRISM_WORKER_LAUNCH_PREFIX split at spaces, or none.
  std::vector<std::string> worker_launch_prefix;
  /// Workers record when each task ran (and GPU tasks' device time, by events on their stream)
  /// for prism::WriteTimeline and `prism timeline`. Also $PRISM_TIMELINE=1.
  bool timeline = false;
  /// spdlog level for prism's own messages in this process and its daemon: trace, debug, info,
  /// warn, error, off. Empty means $PRISM_LOG_LEVEL or "warn".
  std::string log_level;
};

/// How a task or actor is placed. kDefault packs: fractional GPU requests share the fullest
/// device that fits, so whole devices stay free. kSpread picks the emptiest device (and, inside a
/// placement group asked for any bundle, bundles in turn).
/// Across the nodes of a cluster, kDefault packs onto the caller's node while the resources the
/// task asks for stay under half used there, then sends it to the least used node that has room;
/// kSpread sends successive tasks to the nodes in turn.
enum class SchedulingStrategy { kDefault, kSpread };

/// Run on one node of the cluster (Ray's NodeAffinitySchedulingStrategy): its id in hex, as
/// prism::Nodes() and GetRuntimeContext give it. A hard affinity (soft = false) to a node that is
/// dead, unknown or too small fails with TaskUnschedulableError; a soft one runs elsewhere then.
struct NodeAffinity {
  std::string node_id;  // empty: none
  bool soft = false;
};

/// How a placement group's bundles are laid out. On one node every strategy places all bundles on
/// it, except kStrictSpread with more than one bundle, which needs a node per bundle; kSpread and
/// kStrictSpread put fractional GPU bundles on different devices where they can.
enum class PlacementStrategy { kPack, kSpread, kStrictPack, kStrictSpread };

/// What prism::CreatePlacementGroup reserves.
struct PlacementGroupOptions {
  /// Each bundle's resources, by name: "CPU", "GPU", "memory" (bytes) and custom ones.
  std::vector<std::map<std::string, double>> bundles;
  PlacementStrategy strategy = PlacementStrategy::kPack;
  /// A name other drivers can find it by (prism::GetPlacementGroup); unique while it exists.
  std::string name;
  /// The group's whole GPUs must all be joined by NVLink (or NVSwitch); a group that could never
  /// get such a set fails with InfeasibleError. Fractional GPU bundles are not counted.
  bool require_nvlink = false;
  /// Outlives its job (Ray's lifetime="detached"): it lives until RemovePlacementGroup.
  bool detached = false;
};

/// Resources reserved together (prism::CreatePlacementGroup), for tasks and actors placed into
/// its bundles. A value type: copies name the same group. It lives until RemovePlacementGroup
/// or until its job ends.
class PlacementGroup {
 public:
  PlacementGroup() = default;
  PlacementGroup(uint64_t id, std::string name, PlacementStrategy strategy,
                 std::vector<std::map<std::string, double>> bundles)
      : id_(id), name_(std::move(name)), strategy_(strategy), bundles_(std::move(bundles)) {}
  /// 0 for a default-constructed (no) group.
  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }
  PlacementStrategy strategy() const { return strategy_; }
  const std::vector<std::map<std::string, double>>& bundles() const { return bundles_; }
  bool valid() const { return id_ != 0; }
  /// Blocks until its bundles are reserved: true, or false once `timeout` passed first. Throws
  /// InvalidArgumentError if the group was removed.
  bool Wait(std::chrono::milliseconds timeout) const;

 private:
  uint64_t id_ = 0;
  std::string name_;
  PlacementStrategy strategy_ = PlacementStrategy::kPack;
  std::vector<std::map<std::string, double>> bundles_;
};

/// Per-task options, as in Ray's `.options(...)`.
struct TaskOptions {
  /// CPUs the task holds while it runs (fractions allowed).
  double num_cpus = 1;
  /// GPUs it holds while it runs: a share of one device (below 1), or whole devices.
  /// prism::GetGpuIds() inside the task says which.
  double num_gpus = 0;
  /// Bytes of device memory the task may allocate through prism's pools (gpu::CurrentContext());
  /// an allocation past it is an OutOfMemory error in this task only. Needs num_gpus. Memory a
  /// framework allocates by itself (outside prism's pools) is not counted.
  uint64_t gpu_memory = 0;
  /// Bytes of memory the task reserves while it runs (it is placed only where they are free).
  uint64_t memory = 0;
  /// Custom resources the task holds while it runs.
  std::map<std::string, double> resources;
  /// How often the task is re-run after its worker died (not after the function threw).
  /// -1 retries forever.
  int max_retries = 3;
  /// A name for logs and errors; defaults to the function's name.
  std::string name;
  /// Environment variables set in the worker that runs the task (workers with other variables
  /// are not used for it, so tasks with variables get processes of their own).
  std::map<std::string, std::string> env;
  /// Which kind of worker runs it: "" a worker of this driver's own kind, "cpp" the generic C++
  /// worker, which finds the function in the libraries of InitOptions::code_search_path,
  /// "python" a Python worker (prism::PyFunction sets it).
  std::string runtime;
  /// Where it runs (see SchedulingStrategy).
  SchedulingStrategy scheduling_strategy = SchedulingStrategy::kDefault;
  /// Run on this node (see NodeAffinity).
  NodeAffinity node_affinity;
  /// Only on nodes whose labels (prism start --labels) hold all of these: label -> value, or
  /// "!value" (not it), "in(a,b)" (one of them), "!in(a,b)" (none of them). As Ray's
  /// label_selector.
  std::map<std::string, std::string> label_selector;
  /// Run on resources reserved by this placement group (they come out of its bundles, not the
  /// node's free resources), in bundle `placement_group_bundle_index` (-1: any bundle).
  PlacementGroup placement_group;
  int placement_group_bundle_index = -1;
};

/// Options of an actor, as in Ray's `.options(...)` on an actor class.
struct ActorOptions {
  /// CPUs the actor holds for its whole life (fractions allowed). As in Ray, 0 by default.
  double num_cpus = 0;
  /// GPUs it holds for its whole life: a share of one device (below 1), or whole devices.
  double num_gpus = 0;
  /// Bytes of device memory the actor may allocate through prism's pools, for its whole life
  /// (see TaskOptions::gpu_memory).
  uint64_t gpu_memory = 0;
  /// Bytes of memory it reserves for its whole life.
  uint64_t memory = 0;
  /// Custom resources it holds for its whole life.
  std::map<std::string, double> resources;
  /// A name other processes of the cluster can find it by (prism::GetActor); unique while alive
  /// within its namespace.
  std::string name;
  /// The namespace its name lives in (Ray's namespaces): a named actor is found only by a lookup
  /// in the same namespace. Empty is the default namespace.
  std::string ray_namespace;
  /// Outlives its owner (the process that created it) and that process's job, on a standalone
  /// daemon; it lives until killed. Otherwise it dies with its owner, or when no handle is left.
  bool detached = false;
  /// How often its process is started again after it died (crash, SIGKILL); -1 forever. Its
  /// state is rebuilt by calling the factory again with the same arguments.
  int max_restarts = 0;
  /// How often a call that was running when the actor died is sent again once it restarted;
  /// -1 forever. Otherwise such a call fails with ActorDiedError.
  int max_task_retries = 0;
  /// Calls that run at once, each on a thread of its own. 1 (the default) runs one caller's calls
  /// in the order they were made.
  int max_concurrency = 1;
  /// Environment variables set in the actor's process.
  std::map<std::string, std::string> env;
  /// Where it runs (see SchedulingStrategy).
  SchedulingStrategy scheduling_strategy = SchedulingStrategy::kDefault;
  /// Run on this node (see NodeAffinity).
  NodeAffinity node_affinity;
  /// Only on nodes whose labels (prism start --labels) hold all of these: label -> value, or
  /// "!value" (not it), "in(a,b)" (one of them), "!in(a,b)" (none of them). As Ray's
  /// label_selector.
  std::map<std::string, std::string> label_selector;
  /// Run on resources reserved by this placement group (they come out of its bundles, not the
  /// node's free resources), in bundle `placement_group_bundle_index` (-1: any bundle).
  PlacementGroup placement_group;
  int placement_group_bundle_index = -1;
};

/// Counters this process's runtime keeps, for diagnostics and tests.
struct RuntimeStats {
  uint64_t tasks_submitted = 0;
  uint64_t tasks_retried = 0;
  uint64_t leases_requested = 0;
  uint64_t leases_granted = 0;
  uint64_t leases_returned = 0;
};

/// A node of the cluster, as prism::Nodes() reports it.
struct NodeInfo {
  std::string node_id;  // hex
  bool alive = true;
  bool is_head = false;
  std::string address;  // the IP the node is reached at
  int port = 0;         // its cluster port; 0: an embedded single node (no network)
  std::string hostname;
  std::string session_dir;  // on its machine
  std::map<std::string, std::string> labels;
  std::string death_cause;                  // why it died (when !alive)
  std::map<std::string, double> resources;  // totals: "CPU", "GPU", "memory" (bytes), custom
  std::map<std::string, double> available;  // free now (as last reported)
  uint64_t object_store_capacity = 0;       // bytes
  uint64_t object_store_used = 0;
};

/// The node's object store, as its daemon reports it.
struct ObjectStoreStats {
  uint64_t capacity = 0;  // bytes
  uint64_t used = 0;      // bytes allocated to objects in memory
  uint64_t pinned = 0;    // bytes being written or read (not spillable now)
  uint64_t spilled = 0;   // bytes in spill files on disk
  uint64_t num_objects = 0;
  uint64_t num_spilled = 0;
  uint64_t spills_total = 0;
  uint64_t restores_total = 0;
  std::string spill_dir;  // where spilled objects go
};

}  // namespace prism

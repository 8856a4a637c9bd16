// The core worker: the part of the runtime that lives in every driver and worker process. It
// owns the objects its process creates, submits tasks, serves its objects to borrowers and, in
// a worker, runs the tasks pushed to it.
#pragma once

#include <prism/internal/runtime_api.h>
#include <prism/options.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "object_store/store_client.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "runtime/process_runtime.h"
#include "worker/actor_submitter.h"
#include "worker/control_client.h"
#include "worker/gpu_tasks.h"
#include "worker/lease_client.h"
#include "worker/memory_store.h"
#include "worker/object_access.h"
#include "worker/output_capture.h"
#include "worker/owner_clients.h"
#include "worker/owner_service.h"
#include "worker/result_writer.h"
#include "worker/task_context.h"
#include "worker/task_executor.h"
#include "worker/task_runner.h"
#include "worker/task_specs.h"
#include "worker/task_stream.h"
#include "worker/task_submitter.h"
#include "worker/timeline.h"

namespace prism {

struct CoreWorkerOptions {
  rpc::Role role = rpc::ROLE_DRIVER;
  std::string session_dir;
  std::string daemon_socket;
  std::string token;
  WorkerId worker_id;
  JobId job_id;  // workers: from the daemon's launch; drivers: assigned in the handshake
  std::string build_id;
  std::vector<std::string> worker_argv;  // drivers: how the job's workers start (see InitOptions)
  std::vector<std::string>
      worker_launch_prefix;                   // drivers: what runs each worker (see InitOptions)
  bool timeline = false;                      // drivers: workers record task events
  std::vector<std::string> code_search_path;  // drivers: libraries for the generic C++ worker
  std::string python_executable;              // drivers: the interpreter of Python workers
  uint64_t runtime_generation = 0;
  SubmitterConfig submitter;
};

class CoreWorker;
/// The core worker of this process (after prism::Init); throws InvalidArgumentError before.
std::shared_ptr<CoreWorker> CurrentCoreWorker();

class CoreWorker final : public ProcessRuntime, private SubmitterHost {
 public:
  /// Listens on its own socket, connects to the node daemon and registers. Errors: the daemon
  /// is unreachable or refused us.
  static Result<std::unique_ptr<CoreWorker>> Start(CoreWorkerOptions options);
  ~CoreWorker() override;

  internal::RefPtr SubmitTask(const std::string& function,
                              std::vector<internal::SerializedArg> args, const TaskOptions& options,
                              std::shared_ptr<TaskStream> stream = nullptr);
  /// A task with `num_returns` (>= 1) return objects: their handles, in order. A task of
  /// another language returns that many values; an error fails all of them.
  std::vector<internal::RefPtr> SubmitTaskReturns(const std::string& function,
                                                  std::vector<internal::SerializedArg> args,
                                                  const TaskOptions& options,
                                                  uint32_t num_returns) override;
  std::shared_ptr<internal::StreamHandle> SubmitStreamingTask(
      const std::string& function, std::vector<internal::SerializedArg> args,
      const TaskOptions& options);
  /// Inside a streaming task: sends a value to its caller.
  void StreamWrite(const internal::EncodedValue& value);
  internal::ActorRef CreateActor(const std::string& factory,
                                 std::vector<internal::SerializedArg> args,
                                 const ActorOptions& options);
  internal::RefPtr SubmitActorTask(const internal::ActorRef& actor, const std::string& method,
                                   std::vector<internal::SerializedArg> args);
  std::vector<internal::RefPtr> SubmitActorTaskReturns(const internal::ActorRef& actor,
                                                       const std::string& method,
                                                       std::vector<internal::SerializedArg> args,
                                                       uint32_t num_returns) override;
  void KillActor(const ActorId& id, bool no_restart);
  /// In an actor's process: the actor ends for good (no restart), its calls failing with
  /// ActorDiedError that gives `reason`. Does not return.
  [[noreturn]] void ExitActor(const std::string& reason) override;
  void CancelTask(const internal::RefHandle& ref, bool force);
  internal::ActorRef GetActorByName(const std::string& name, const std::string& ray_namespace = "");
  PlacementGroup CreatePlacementGroup(const PlacementGroupOptions& options);
  /// False once `timeout` passed before the group was created; throws if it was removed.
  bool WaitPlacementGroup(uint64_t id, std::chrono::milliseconds timeout);
  void RemovePlacementGroup(uint64_t id);
  PlacementGroup GetPlacementGroup(const std::string& name);
  /// The node daemon's status (asks it over a connection of its own).
  rpc::StatusReply NodeStatus() const override;
  /// The cluster's nodes (one, in this version) with their resources.
  std::vector<NodeInfo> Nodes() const;
  /// The control store's key-value table. KvPut returns whether the key existed.
  bool KvPut(const std::string& ns, const std::string& key, const std::string& value,
             bool overwrite) override;
  std::optional<std::string> KvGet(const std::string& ns, const std::string& key) override;
  bool KvDelete(const std::string& ns, const std::string& key) override;
  /// How this actor process's output lines are labelled (a foreign runtime names its class).
  void SetActorLabel(std::string label) override { runner_->SetActorLabel(std::move(label)); }
  /// The GPUs the running task (or this actor) holds.
  std::vector<int> GpuIds() const;
  RuntimeContextInfo RuntimeContext() const override;
  /// A handle to the actor this process hosts (a borrower of its handle object, so it keeps the
  /// actor alive while it is held). Throws InvalidArgumentError outside an actor.
  internal::ActorRef CurrentActor() override;
  /// The actor this process hosts (nil in a driver or a task worker).
  ActorId actor_id() const override { return runner_->actor_id(); }
  const std::string& session_dir() const { return options_.session_dir; }
  /// The running GPU task's context (gpu::CurrentContext()).
  gpu::Context& CurrentGpuContext() { return gpu_tasks_->Current(); }
  GpuTasks& gpu_tasks() { return *gpu_tasks_; }
  Result<gpu::Backend*> GpuBackend() override { return gpu_tasks_->backend(); }
  gpu::Context* GpuContextOrNull() override { return gpu_tasks_->CurrentOrNull(); }
  Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> GpuOutsideTasks(int device) override {
    return gpu_tasks_->OutsideTasks(device);
  }
  /// Throws ObjectStoreFullError when a large value finds no room.
  internal::RefPtr Put(const internal::EncodedValue& value);
  internal::RefPtr MakeRef(const ObjectId& id, internal::OwnerAddress owner);
  /// Throws prism's typed errors.
  std::vector<internal::EncodedView> Get(const std::vector<const internal::RefHandle*>& refs,
                                         int64_t timeout_ms);
  bool InObjectStore(const void* p, size_t n) const {
    return object_store_ && object_store_->Contains(p, n);
  }
  std::vector<bool> Wait(const std::vector<const internal::RefHandle*>& refs, size_t num_returns,
                         int64_t timeout_ms);
  /// Runs `ready` once the object is ready (a value or an error; fetched from its owner if
  /// borrowed), on the thread that made it ready, or now on this one. `ready` must not block.
  void WhenReady(const internal::RefHandle& ref, std::function<void()> ready) override;
  void ReleaseRef(const ObjectId& id) { store_.RemoveRef(id); }
  /// A reader found the device objects of `ref` lost: rebuilds it if this process owns it and
  /// kept its task (see TaskSubmitter's lineage). Blocks until the event loop answered.
  bool RebuildLost(const internal::RefHandle& ref);
  /// Runs `fn` on the event loop (tests: to keep it busy).
  void PostToLoop(std::function<void()> fn) { asio::post(loop_.context(), std::move(fn)); }
  /// Results kept for rebuilding through lineage (tests).
  size_t lineage_size() const { return submitter_ ? submitter_->lineage_size() : 0; }

  /// How many workers borrow an object this process owns (tests).
  size_t NumBorrowers(const ObjectId& id) const { return store_.NumBorrowers(id); }
  /// Worker processes: runs pushed tasks on the calling thread until the daemon disconnects.
  void RunTaskLoop();
  /// Stops everything; pending objects fail. Idempotent.
  void Shutdown();

  RuntimeStats stats() const { return submitter_->stats(); }
  /// Asks the node daemon. Throws RuntimeError when it does not answer.
  ObjectStoreStats object_store_stats() const;
  const internal::OwnerAddress& address() const { return address_; }
  const JobId& job_id() const { return options_.job_id; }

 private:
  explicit CoreWorker(CoreWorkerOptions options);
  std::vector<internal::RefPtr> SubmitTaskImpl(const std::string& function,
                                               std::vector<internal::SerializedArg> args,
                                               const TaskOptions& options,
                                               std::shared_ptr<TaskStream> stream,
                                               uint32_t num_returns);
  Status Listen();
  Status ConnectDaemon();
  void Accept();
  void OnPeerMessage(rpc::Connection& conn, rpc::Envelope& msg);
  /// A task pushed by a caller (on the loop, or on the executor's thread that read it itself).
  void TakePush(rpc::Connection& conn, rpc::Envelope& msg);
  /// Before a submission or Put: see core_worker.cc.
  void KeepArgumentExports();
  /// A value of one of this process's streaming tasks arrived.
  // SubmitterHost: what the submitters need of the parts around them.
  void FetchBorrowed(const ObjectId& id, const internal::OwnerAddress& owner,
                     MemoryStore::Callback done) override;
  bool IsSelf(const internal::OwnerAddress& owner) override;
  internal::RefPtr NestedRef(const rpc::NestedRef& nested) override;
  void DiscardStored(const ObjectId& id) override;
  bool ProducerGone(const internal::OwnerAddress& producer) override;
  void DiscardDevice(const ObjectId& id, const internal::OwnerAddress& producer) override;
  void RemoveBorrowers(const rpc::RemoveBorrowers& released) override;
  /// A streaming task's value arrived: it goes to the task's stream.
  void StreamItem(const TaskId& task, uint64_t index, StoredObject value) override;
  void OnFreed(FreedObject f);
  void OnWorkerDied(const WorkerId& id);

  CoreWorkerOptions options_;
  rpc::EventLoop loop_;  // destroyed last: everything below runs on it
  MemoryStore store_;
  std::shared_ptr<StoreClient> object_store_;  // shared with the pins of Buffers handed out
  internal::OwnerAddress address_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;
  std::unique_ptr<DaemonClient> daemon_;
  std::unique_ptr<ControlClient>
      control_;  // the actor directory, placement groups, key-value table
  std::string daemon_leftover_;
  // Worker: how many threads wait in Get/Wait inside a task; the daemon hears of 0 <-> 1.
  Mutex blocked_mu_;
  int blocked_ PRISM_GUARDED_BY(blocked_mu_) = 0;
  void SetBlocked(bool blocked);
  bool InTaskOfWorker() const;
  /// Who submits a task that takes `task_id` now, from the calling thread.
  Submitter SubmitterOf(const TaskId& task_id) const;
  std::unique_ptr<TaskSubmitter> submitter_;
  std::unique_ptr<ActorSubmitter> actor_submitter_;
  std::unique_ptr<OutputCapture> output_;  // workers: stdout/stderr to the driver
  // Refs inside the arguments of actors this process created: the actor may keep them.
  mutable Mutex actor_mu_;
  std::unordered_map<ActorId, std::vector<internal::RefPtr>> actor_arg_refs_
      PRISM_GUARDED_BY(actor_mu_);
  // This process's streaming tasks not ended yet, by task.
  Mutex streams_mu_;
  std::unordered_map<TaskId, std::weak_ptr<TaskStream>> streams_ PRISM_GUARDED_BY(streams_mu_);
  std::unique_ptr<TaskExecutor> executor_;
  std::unique_ptr<GpuTasks> gpu_tasks_ =
      std::make_unique<GpuTasks>();             // GPU tasks' contexts and streams
  std::unique_ptr<TimelineRecorder> timeline_;  // workers with recording on (PRISM_TIMELINE=1)
  std::atomic<bool> shut_down_{false};

  // What runs on each thread, and the ids of what it submits and puts.
  std::unique_ptr<TaskContext> task_context_;
  // Handles, puts, gets and waits; reads and writes of the node's store.
  std::unique_ptr<ObjectAccess> objects_;
  // Writes finished tasks' results for their callers.
  std::unique_ptr<ResultWriter> results_;
  // Runs pushed tasks (workers) and keeps the hosted actor's state.
  std::unique_ptr<TaskRunner> runner_;

  // Connections to other core workers as their client: fetches, borrow registrations, imports.
  std::unique_ptr<OwnerClients> owner_clients_;
  // The owner's side of the same protocol: answers fetches, registrations and imports (event loop).
  std::unique_ptr<OwnerService> owner_service_;
  std::unordered_set<std::shared_ptr<rpc::Connection>> peers_;  // accepted connections
};

}  // namespace prism

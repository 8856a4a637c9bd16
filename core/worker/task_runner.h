// Runs the tasks pushed to a worker process, on its executor's threads: finds what to run (a
// registered function, an actor's factory or method, or another language's through the foreign
// executor), reads its arguments (inline, or pinned in the node's store), gives a GPU task its
// context, records its timeline, has its results written for the caller (ResultWriter), and keeps
// the state of the actor this process hosts once a creation task made it one.
#pragma once

#include <prism/internal/runtime_api.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutex.h"
#include "object_store/store_client.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "runtime/process_runtime.h"
#include "worker/gpu_tasks.h"
#include "worker/object_access.h"
#include "worker/output_capture.h"
#include "worker/owner_clients.h"
#include "worker/result_writer.h"
#include "worker/task_executor.h"
#include "worker/timeline.h"

namespace prism {

class TaskRunner {
 public:
  struct Parts {
    internal::OwnerAddress
        self;  // this process: the producer of the device objects its results hold
    ObjectAccess& objects;
    ResultWriter& results;
    OwnerClients& owners;
    GpuTasks& gpu;
    std::shared_ptr<StoreClient> host_store;  // pins the arguments read from it
    TimelineRecorder* timeline = nullptr;     // workers recording task events; else null
  };
  explicit TaskRunner(Parts parts)
      : self_(std::move(parts.self)),
        objects_(parts.objects),
        results_(parts.results),
        owners_(parts.owners),
        gpu_(parts.gpu),
        host_store_(std::move(parts.host_store)),
        timeline_(parts.timeline) {}
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  /// Before the first task: the executor whose threads run the tasks (an actor's creation sets
  /// its concurrency there), and where a worker's output goes (labelled with the running task;
  /// `label_pid` ends each label), if it is captured.
  void SetExecutor(TaskExecutor* executor) { executor_ = executor; }
  void SetOutput(OutputCapture* output, std::string label_pid) {
    output_ = output;
    label_pid_ = std::move(label_pid);
  }

  /// Executor thread: runs one pushed task that came on `from`.
  ExecutedTask Execute(std::shared_ptr<const rpc::PushTask> push,
                       const std::shared_ptr<rpc::Connection>& from);
  /// Inside a streaming task: sends a value to its caller.
  void StreamWrite(const internal::EncodedValue& value);

  /// The actor this process hosts (nil in a driver or a task worker), and what its creation said.
  struct HostedActor {
    ActorId id;
    internal::OwnerAddress owner;  // of its handle object
    std::string name;
    uint32_t restarts = 0;                    // restarts before this creation
    std::map<std::string, double> resources;  // what it holds
  };
  HostedActor hosted_actor() const;
  ActorId actor_id() const {
    MutexLock lock(actor_mu_);
    return actor_id_;
  }
  /// The GPUs the hosted actor's process holds (set by its creation; read on every thread).
  const std::vector<int>& actor_gpu_ids() const { return actor_gpu_ids_; }
  /// How this actor process's output lines are labelled (a foreign runtime names its class).
  void SetActorLabel(std::string label) { actor_label_ = std::move(label); }

 private:
  /// Builds and sends the reply of a task whose result came later (ReplyLater).
  void SendLateReply(const rpc::PushTask& push, rpc::Connection& to,
                     const std::function<ReturnValues()>& produce);

  const internal::OwnerAddress self_;
  ObjectAccess& objects_;
  ResultWriter& results_;
  OwnerClients& owners_;
  GpuTasks& gpu_;
  const std::shared_ptr<StoreClient> host_store_;
  TimelineRecorder* const timeline_;
  TaskExecutor* executor_ = nullptr;
  OutputCapture* output_ = nullptr;
  std::string label_pid_;

  // The hosted actor: its object and class (its calls run on the executor, on up to
  // max_concurrency threads), set by its creation on the executor's thread.
  std::shared_ptr<void> actor_instance_;
  std::vector<int> actor_gpu_ids_;
  std::map<std::string, double> actor_resources_;
  uint32_t actor_restarts_ = 0;
  std::string actor_type_;
  std::string actor_label_;  // how its output lines are labelled: its name, or its class
  mutable Mutex actor_mu_;
  ActorId actor_id_ PRISM_GUARDED_BY(actor_mu_);
  internal::OwnerAddress actor_owner_ PRISM_GUARDED_BY(actor_mu_);
  std::string actor_name_ PRISM_GUARDED_BY(actor_mu_);
};

}  // namespace prism

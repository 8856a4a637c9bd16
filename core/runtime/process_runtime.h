// What prism's own libraries built over the core (the collectives, the Python binding) ask of
// the runtime of their process. The core worker implements it; they include this header and no
// header of core/worker, so the core worker can change behind it. (User programs use the public
// API in <prism/prism.h> instead.)
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/context.h>
#include <prism/ids.h>
#include <prism/internal/runtime_api.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "prism.pb.h"

namespace prism {

/// A task's results: one value per return object (TaskSpec::num_returns, at least one).
using ReturnValues = std::vector<internal::EncodedValue>;

/// Runs tasks of functions that are not in the C++ registry (another language's, e.g. "py:..."):
/// given the spec and the arguments' encoded bytes, returns the encoded results (as many as the
/// spec's num_returns). Throws ForeignTaskError for an exception of the task, anything else for a
/// failure of the runtime. `reply_later` lets it answer after it returned, from any thread: it
/// throws ReplyDeferred, and later calls reply_later once with a function that produces the
/// result (or throws ForeignTaskError).
using ReplyLater = std::function<void(std::function<ReturnValues()> produce)>;
using ForeignExecutor = std::function<ReturnValues(
    const rpc::TaskSpec& spec, const std::vector<std::string_view>& args,
    const std::shared_ptr<const void>& source, const ReplyLater& reply_later)>;
/// Thrown by a foreign executor that will answer through reply_later.
struct ReplyDeferred {};
/// Set before the worker starts (prism::Init in a worker process).
void SetForeignExecutor(ForeignExecutor executor);

/// A task of another language raised: its type, message (with the remote traceback) and the
/// exception serialized by that language.
class ForeignTaskError : public std::runtime_error {
 public:
  ForeignTaskError(std::string type, std::string message, std::string payload)
      : std::runtime_error(message), type_(std::move(type)), payload_(std::move(payload)) {}
  const std::string& type() const { return type_; }
  const std::string& payload() const { return payload_; }

 private:
  std::string type_, payload_;
};

/// Stops a running call of this actor process that its caller cancelled, where the runtime that
/// runs it can (an async method); runs on the event loop, so it must not block.
using CallCanceller = std::function<void(const TaskId& task)>;
void SetCallCanceller(CallCanceller canceller);

/// Inside a task, for its scope: the thread waits for something another thread would wait for
/// too (Python's GIL), so the wait does not count as the task blocking. The executor's watcher
/// counts a wait in progress as excused too, so a thread waiting long for the GIL (its holder
/// preempted on a busy machine) does not look blocked and earn the actor another thread that
/// would only fight over the GIL as well. Outside tasks it does nothing.
class ExcusedWait {
 public:
  ExcusedWait();
  ~ExcusedWait();
  ExcusedWait(const ExcusedWait&) = delete;
  ExcusedWait& operator=(const ExcusedWait&) = delete;

 private:
  std::chrono::steady_clock::time_point since_;
};

/// What runs in this process now (Ray's runtime context).
struct RuntimeContextInfo {
  std::string job_id, worker_id, node_id;   // hex
  std::string task_id;                      // hex; empty in a driver outside tasks
  std::string actor_id;                     // hex; empty unless this process hosts an actor
  std::string actor_name;                   // its name, if it has one
  std::map<std::string, double> resources;  // what the running task (or this actor) holds
  std::vector<int> gpu_ids;
  uint32_t actor_restarts = 0;  // how often this process's actor was restarted before
  bool is_worker = false;
};

class ProcessRuntime {
 public:
  virtual ~ProcessRuntime() = default;

  // Tasks and actors of another language (their functions named, their values encoded).
  /// A task with `num_returns` (>= 1) return objects: their handles, in order.
  virtual std::vector<internal::RefPtr> SubmitTaskReturns(const std::string& function,
                                                          std::vector<internal::SerializedArg> args,
                                                          const TaskOptions& options,
                                                          uint32_t num_returns) = 0;
  virtual std::vector<internal::RefPtr> SubmitActorTaskReturns(
      const internal::ActorRef& actor, const std::string& method,
      std::vector<internal::SerializedArg> args, uint32_t num_returns) = 0;
  /// Runs `ready` once the object is ready (a value or an error), on the thread that made it
  /// ready, or now on this one. `ready` must not block.
  virtual void WhenReady(const internal::RefHandle& ref, std::function<void()> ready) = 0;

  // The actor this process hosts, and what runs here.
  /// A handle to it (keeps it alive while held). Throws InvalidArgumentError outside an actor.
  virtual internal::ActorRef CurrentActor() = 0;
  /// Nil in a driver or a task worker.
  virtual ActorId actor_id() const = 0;
  /// The actor ends for good (no restart), its calls failing with ActorDiedError that gives
  /// `reason`. Does not return.
  [[noreturn]] virtual void ExitActor(const std::string& reason) = 0;
  /// How this actor process's output lines are labelled (a foreign runtime names its class).
  virtual void SetActorLabel(std::string label) = 0;
  virtual RuntimeContextInfo RuntimeContext() const = 0;

  // The control service and the node.
  /// The key-value table. KvPut returns whether the key existed.
  virtual bool KvPut(const std::string& ns, const std::string& key, const std::string& value,
                     bool overwrite) = 0;
  virtual std::optional<std::string> KvGet(const std::string& ns, const std::string& key) = 0;
  virtual bool KvDelete(const std::string& ns, const std::string& key) = 0;
  /// The node daemon's status.
  virtual rpc::StatusReply NodeStatus() const = 0;

  // The GPU layer.
  /// The device backend (loaded on first use); why not, where it cannot load.
  virtual Result<gpu::Backend*> GpuBackend() = 0;
  /// The running GPU task's context, or null outside GPU tasks.
  virtual gpu::Context* GpuContextOrNull() = 0;
  /// Device memory and a stream of `device` for work outside GPU tasks (a driver's).
  virtual Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> GpuOutsideTasks(int device) = 0;
};

/// This process's runtime (after prism::Init); throws InvalidArgumentError before.
std::shared_ptr<ProcessRuntime> CurrentRuntime();

}  // namespace prism

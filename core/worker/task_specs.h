// What a submission becomes: the checks of a task's, actor's or call's options (what prism cannot
// honour is an InvalidArgumentError before anything is sent), and the specs built from them. Pure
// functions of their inputs: the core worker supplies the ids and the caller's address.
#pragma once

#include <prism/internal/runtime_api.h>
#include <prism/options.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/resources.h"
#include "prism.pb.h"
#include "worker/pending_task.h"

namespace prism {

/// num_returns between 1 and kMaxReturns.
void CheckNumReturns(uint32_t num_returns);
/// Environment variables a task or actor asks for: names a shell would accept, not prism's own
/// (PRISM_...), values without NUL bytes.
void CheckEnv(const std::map<std::string, std::string>& env);
/// The resources a task or actor holds: CPUs, GPUs, memory and custom ones, checked. `options`
/// names the options type in messages ("TaskOptions").
ResourceSet ShapeOf(double num_cpus, double num_gpus, uint64_t memory, uint64_t gpu_memory,
                    const std::map<std::string, double>& resources, const char* options);
/// Where a task or actor may be placed, checked.
rpc::Placement PlacementOf(SchedulingStrategy strategy, const PlacementGroup& group,
                           int bundle_index, const NodeAffinity& affinity = {},
                           const std::map<std::string, std::string>& label_selector = {});

/// Options found valid: the resource shape and the placement they ask for.
struct CheckedOptions {
  ResourceSet shape;
  rpc::Placement placement;
};
CheckedOptions CheckTaskOptions(const TaskOptions& options);
CheckedOptions CheckActorOptions(const ActorOptions& options);

/// Who submits: the id the new task takes, the task it is submitted from, the job, and the
/// process that owns its results.
struct Submitter {
  TaskId task_id;
  TaskId parent;
  JobId job;
  internal::OwnerAddress caller;
};
/// Checks a ref argument (or a ref inside one) before it is sent: the core worker refuses
/// handles of an earlier runtime.
using CheckRef = std::function<void(const internal::RefHandle&)>;

/// The task `function(args)` with checked `options`, returning `num_returns` objects: its spec,
/// lease spec, the refs it keeps alive and its retries. Its return objects are not referenced yet.
PendingTask BuildTask(const Submitter& who, const std::string& function,
                      std::vector<internal::SerializedArg> args, const TaskOptions& options,
                      CheckedOptions checked, uint32_t num_returns, const CheckRef& check_ref);
/// A call of `method` on `actor`.
PendingTask BuildActorCall(const Submitter& who, const ActorId& actor, const std::string& method,
                           std::vector<internal::SerializedArg> args, uint32_t num_returns,
                           const CheckRef& check_ref);
/// The creation request of an actor made by `factory`, without its arguments (the caller adds
/// them, as values: a restart calls the factory again with the same ones). The actor's id is
/// `who.task_id`.
rpc::CreateActor BuildActorCreation(const Submitter& who, const std::string& factory,
                                    const ActorOptions& options, const CheckedOptions& checked);

}  // namespace prism

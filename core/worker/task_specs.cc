#include "worker/task_specs.h"

#include <prism/errors.h>
#include <prism/serialization.h>

#include <cctype>
#include <cmath>
#include <utility>

#include "base/ids.h"
#include "base/labels.h"
#include "rpc/address.h"

namespace prism {

void CheckNumReturns(uint32_t num_returns) {
  if (num_returns < 1 || num_returns > kMaxReturns) {
    throw InvalidArgumentError("num_returns must be between 1 and " + std::to_string(kMaxReturns));
  }
}

void CheckEnv(const std::map<std::string, std::string>& env) {
  for (const auto& [name, value] : env) {
    bool ok = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
    for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) throw InvalidArgumentError("'" + name + "' is not a valid environment variable name");
    if (name.rfind("PRISM_", 0) == 0) {
      throw InvalidArgumentError("environment variables starting with PRISM_ are prism's own: " +
                                 name);
    }
    if (value.find('\0') != std::string::npos) {
      throw InvalidArgumentError("the value of " + name + " contains a NUL byte");
    }
  }
}

// The resources a task or actor holds: CPUs, memory and custom ones, checked.
ResourceSet ShapeOf(double num_cpus, double num_gpus, uint64_t memory, uint64_t gpu_memory,
                    const std::map<std::string, double>& resources, const char* options) {
  if (!std::isfinite(num_cpus) || num_cpus < 0) {
    throw InvalidArgumentError("num_cpus must be a finite number >= 0, not " +
                               std::to_string(num_cpus));
  }
  if (!std::isfinite(num_gpus) || num_gpus < 0) {
    throw InvalidArgumentError("num_gpus must be a finite number >= 0, not " +
                               std::to_string(num_gpus));
  }
  if (gpu_memory > 0 && num_gpus <= 0) {
    throw InvalidArgumentError(std::string(options) +
                               "::gpu_memory needs num_gpus: it caps memory on its GPU");
  }
  std::map<std::string, double> units = resources;
  if (units.count(kCpu) > 0)
    throw InvalidArgumentError("set CPUs with num_cpus, not resources[\"CPU\"]");
  if (units.count(kGpu) > 0)
    throw InvalidArgumentError("set GPUs with num_gpus, not resources[\"GPU\"]");
  if (num_gpus > 0) units[kGpu] = num_gpus;
  if (units.count(kMemory) > 0) {
    throw InvalidArgumentError(std::string("set memory with ") + options + "::memory");
  }
  units[kCpu] = num_cpus;
  if (memory > 0) units[kMemory] = static_cast<double>(memory);
  auto shape = ResourceSet::FromUnits(units);
  if (!shape.ok()) throw InvalidArgumentError(shape.status().message());
  if (Status st = CheckRequestShape(*shape); !st.ok()) throw InvalidArgumentError(st.message());
  return std::move(*shape);
}

// Where a task or actor may be placed, checked.
rpc::Placement PlacementOf(SchedulingStrategy strategy, const PlacementGroup& group,
                           int bundle_index, const NodeAffinity& affinity,
                           const std::map<std::string, std::string>& label_selector) {
  rpc::Placement p;
  if (!affinity.node_id.empty()) {
    NodeId id = UniqueIdFromHex(affinity.node_id);
    if (id.IsNil()) {
      throw InvalidArgumentError("node_affinity.node_id must be a node id in hex (" +
                                 std::to_string(2 * NodeId::kSize) + " digits), not '" +
                                 affinity.node_id + "'");
    }
    if (group.valid()) {
      throw InvalidArgumentError("a node affinity and a placement group cannot be combined");
    }
    p.set_node_id(id.Binary());
    p.set_soft(affinity.soft);
  }
  for (const auto& [k, v] : label_selector) (*p.mutable_label_selector())[k] = v;
  if (std::string bad = CheckLabelSelector(p.label_selector()); !bad.empty()) {
    throw InvalidArgumentError(bad);
  }
  if (strategy != SchedulingStrategy::kDefault && strategy != SchedulingStrategy::kSpread) {
    throw InvalidArgumentError("unknown scheduling_strategy " +
                               std::to_string(static_cast<int>(strategy)));
  }
  p.set_strategy(strategy == SchedulingStrategy::kSpread ? rpc::STRATEGY_SPREAD
                                                         : rpc::STRATEGY_DEFAULT);
  p.set_bundle_index(-1);
  if (!group.valid()) {
    if (bundle_index != -1) {
      throw InvalidArgumentError("placement_group_bundle_index is set but placement_group is not");
    }
    return p;
  }
  if (bundle_index < -1 || bundle_index >= static_cast<int>(group.bundles().size())) {
    throw InvalidArgumentError("placement_group_bundle_index " + std::to_string(bundle_index) +
                               " is out of range: the placement group has " +
                               std::to_string(group.bundles().size()) + " bundle(s) (-1: any)");
  }
  p.set_placement_group(group.id());
  p.set_bundle_index(bundle_index);
  return p;
}

CheckedOptions CheckTaskOptions(const TaskOptions& options) {
  if (options.max_retries < -1)
    throw InvalidArgumentError("max_retries must be >= -1 (-1 retries forever)");
  CheckedOptions c;
  c.shape = ShapeOf(options.num_cpus, options.num_gpus, options.memory, options.gpu_memory,
                    options.resources, "TaskOptions");
  CheckEnv(options.env);
  if (!options.runtime.empty() && options.runtime != "cpp" && options.runtime != "python") {
    throw InvalidArgumentError("TaskOptions::runtime must be \"\", \"cpp\" or \"python\", not \"" +
                               options.runtime + "\"");
  }
  c.placement = PlacementOf(options.scheduling_strategy, options.placement_group,
                            options.placement_group_bundle_index, options.node_affinity,
                            options.label_selector);
  return c;
}

CheckedOptions CheckActorOptions(const ActorOptions& options) {
  if (options.max_concurrency < 1) throw InvalidArgumentError("max_concurrency must be at least 1");
  if (options.max_restarts < -1 || options.max_task_retries < -1) {
    throw InvalidArgumentError("max_restarts and max_task_retries must be >= -1 (-1: forever)");
  }
  CheckedOptions c;
  c.shape = ShapeOf(options.num_cpus, options.num_gpus, options.memory, options.gpu_memory,
                    options.resources, "ActorOptions");
  CheckEnv(options.env);
  c.placement = PlacementOf(options.scheduling_strategy, options.placement_group,
                            options.placement_group_bundle_index, options.node_affinity,
                            options.label_selector);
  return c;
}

namespace {

void SetCommon(const Submitter& who, rpc::TaskSpec* spec) {
  spec->set_task_id(who.task_id.Binary());
  spec->set_job_id(who.job.Binary());
  spec->set_parent_task_id(who.parent.Binary());
  rpc::ToWire(who.caller, spec->mutable_caller());
}

// The arguments into the spec: values inline, refs by id (with their owners for a task, whose
// worker may fetch them; an actor call's are resolved by the caller first), and the refs that
// must outlive the task.
void AddArgs(std::vector<internal::SerializedArg> args, bool with_owners, const CheckRef& check_ref,
             PendingTask* t) {
  t->arg_refs.reserve(args.size());
  for (auto& a : args) {
    auto* arg = t->spec->add_args();
    if (a.ref) {
      check_ref(*a.ref);
      auto* ref = arg->mutable_ref();
      ref->set_object_id(a.ref->id().Binary());
      if (with_owners) {
        rpc::ToWire(a.ref->owner(), ref->mutable_owner());
      }
    } else {
      arg->set_value(std::move(a.value));
    }
    t->arg_refs.push_back(std::move(a.ref));
    for (auto& n : a.nested) {
      check_ref(*n);
      t->nested.push_back(std::move(n));
    }
  }
}

}  // namespace

PendingTask BuildTask(const Submitter& who, const std::string& function,
                      std::vector<internal::SerializedArg> args, const TaskOptions& options,
                      CheckedOptions checked, uint32_t num_returns, const CheckRef& check_ref) {
  PendingTask t;
  t.lease.env = options.env;
  t.lease.runtime = options.runtime;
  t.lease.placement = std::move(checked.placement);
  SetCommon(who, t.spec.get());
  t.spec->set_attempt(0);
  t.spec->set_function(function);
  t.spec->set_gpu_memory(options.gpu_memory);
  t.spec->set_name(options.name.empty() ? function : options.name);
  t.spec->set_num_returns(num_returns);
  for (const auto& [name, milli] : checked.shape.milli()) {
    auto* r = t.spec->add_resources();
    r->set_name(name);
    r->set_milli(milli);
  }
  AddArgs(std::move(args), /*with_owners=*/true, check_ref, &t);
  t.lease.shape = std::move(checked.shape);
  t.retries_left = options.max_retries;
  t.return_id = ReturnObjectId(who.task_id, 1);
  return t;
}

PendingTask BuildActorCall(const Submitter& who, const ActorId& actor, const std::string& method,
                           std::vector<internal::SerializedArg> args, uint32_t num_returns,
                           const CheckRef& check_ref) {
  PendingTask t;
  SetCommon(who, t.spec.get());
  t.spec->set_function(method);
  t.spec->set_name(method);
  t.spec->set_num_returns(num_returns);
  t.spec->set_actor_id(actor.Binary());
  AddArgs(std::move(args), /*with_owners=*/false, check_ref, &t);
  t.return_id = ReturnObjectId(who.task_id, 1);
  return t;
}

rpc::CreateActor BuildActorCreation(const Submitter& who, const std::string& factory,
                                    const ActorOptions& options, const CheckedOptions& checked) {
  rpc::CreateActor req;
  *req.mutable_placement() = checked.placement;
  rpc::TaskSpec& spec = *req.mutable_spec();
  SetCommon(who, &spec);
  spec.set_gpu_memory(options.gpu_memory);
  spec.set_function(factory);
  spec.set_name(options.name.empty() ? factory : options.name);
  spec.set_num_returns(1);
  auto* c = spec.mutable_actor_creation();
  c->set_actor_id(who.task_id.Binary());
  c->set_name(options.name);
  c->set_ray_namespace(options.ray_namespace);
  c->set_detached(options.detached);
  c->set_max_restarts(options.max_restarts);
  c->set_max_task_retries(options.max_task_retries);
  c->set_max_concurrency(static_cast<uint32_t>(options.max_concurrency));
  *c->mutable_owner() = spec.caller();
  for (const auto& [name, value] : options.env) {
    auto* e = c->add_env();
    e->set_name(name);
    e->set_value(value);
  }
  for (const auto& [name, milli] : checked.shape.milli()) {
    auto* r = req.add_resources();
    r->set_name(name);
    r->set_milli(milli);
    *spec.add_resources() = *r;  // (the actor's process reads what it holds from its spec)
  }
  return req;
}

}  // namespace prism

// prism._prism: tasks, actors, placement groups and the worker loop that runs Python tasks.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "binding.h"

namespace py = pybind11;

namespace prism::binding {
namespace {

template <typename T>
T Opt(const py::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<T>();
}

PlacementGroup GroupFrom(const py::dict& o) {
  uint64_t id = Opt<uint64_t>(o, "placement_group", 0);
  if (id == 0) return PlacementGroup();
  auto bundles = Opt<std::vector<std::map<std::string, double>>>(o, "placement_group_bundles", {});
  return PlacementGroup(id, "", PlacementStrategy::kPack, std::move(bundles));
}

// What tasks and actors are given alike: resources, environment and placement (`num_cpus`
// defaults differ: a task takes one CPU, an actor none).
template <typename Options>
void ReadPlacedResources(const py::dict& o, double default_cpus, Options& out) {
  out.num_cpus = Opt<double>(o, "num_cpus", default_cpus);
  out.num_gpus = Opt<double>(o, "num_gpus", 0.0);
  out.memory = Opt<uint64_t>(o, "memory", 0);
  out.resources = Opt<std::map<std::string, double>>(o, "resources", {});
  out.env = Opt<std::map<std::string, std::string>>(o, "env", {});
  std::string strategy = Opt<std::string>(o, "scheduling_strategy", "DEFAULT");
  if (strategy == "SPREAD") {
    out.scheduling_strategy = SchedulingStrategy::kSpread;
  } else if (strategy != "DEFAULT") {
    throw InvalidArgumentError("scheduling_strategy must be \"DEFAULT\" or \"SPREAD\", not \"" +
                               strategy + "\"");
  }
  out.placement_group = GroupFrom(o);
  out.placement_group_bundle_index = Opt<int>(o, "placement_group_bundle_index", -1);
  out.node_affinity.node_id = Opt<std::string>(o, "node_affinity", "");
  out.node_affinity.soft = Opt<bool>(o, "node_affinity_soft", false);
  out.label_selector = Opt<std::map<std::string, std::string>>(o, "label_selector", {});
}

TaskOptions TaskOptionsFrom(const py::dict& o) {
  TaskOptions t;
  ReadPlacedResources(o, 1.0, t);
  t.max_retries = Opt<int>(o, "max_retries", 3);
  t.name = Opt<std::string>(o, "name", "");
  t.runtime = Opt<std::string>(o, "runtime", "");
  return t;
}

ActorOptions ActorOptionsFrom(const py::dict& o) {
  ActorOptions a;
  ReadPlacedResources(o, 0.0, a);
  a.name = Opt<std::string>(o, "name", "");
  a.ray_namespace = Opt<std::string>(o, "namespace", "");
  a.detached = Opt<bool>(o, "detached", false);
  a.max_restarts = Opt<int>(o, "max_restarts", 0);
  a.max_task_retries = Opt<int>(o, "max_task_retries", 0);
  a.max_concurrency = Opt<int>(o, "max_concurrency", 1);
  return a;
}

std::vector<internal::SerializedArg> PackArgs(const py::list& args) {
  std::vector<internal::SerializedArg> packed;
  packed.reserve(args.size());
  for (const auto& item : args) {
    auto a = item.cast<py::tuple>();
    if (a[0].cast<std::string>() == "ref") {
      packed.push_back(internal::SerializedArg{a[1].cast<RefPtr>(), {}, {}});
    } else {
      packed.push_back(internal::MakeArg(
          PartsValue(a[1].cast<size_t>(), a[2].cast<py::list>(), Handles(a[3].cast<py::list>()))));
    }
  }
  return packed;
}

py::tuple GroupTuple(const PlacementGroup& g) {
  return py::make_tuple(g.id(), g.name(), g.bundles());
}

// An async actor's calls of its async methods, queued by the executor's thread for the actor's
// event loop to start: the executor's thread never takes the GIL for them, so it does not
// fight the loop's thread for it (which cost more than the calls' own work in bursts), and the
// loop is woken once per burst (an eventfd it watches).
class AsyncCalls {
 public:
  struct Call {
    std::string descriptor;
    std::vector<std::string_view> args;
    std::shared_ptr<const void> source;  // keeps `args` alive
    ReplyLater later;
    uint32_t num_returns;
    std::string task_id;
  };
  // Routes the calls of `methods` from now on; returns the descriptor to watch.
  int Route(std::vector<std::string> methods) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fd_ < 0) {
      fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    }
    methods_ = std::set<std::string, std::less<>>(std::make_move_iterator(methods.begin()),
                                                  std::make_move_iterator(methods.end()));
    return fd_;
  }
  // On the executor's thread: queues `spec`'s call when it is one of the routed methods.
  bool Offer(const rpc::TaskSpec& spec, const std::vector<std::string_view>& args,
             const std::shared_ptr<const void>& source, const ReplyLater& later) {
    if (spec.actor_id().empty() || spec.has_actor_creation() || spec.streaming()) return false;
    std::string_view target = spec.function();
    if (target.substr(0, 5) != "py:m:") return false;
    target.remove_prefix(5);
    target = target.substr(0, target.find_first_of(";|"));
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fd_ < 0 || methods_.find(target) == methods_.end()) return false;
      calls_.push_back(Call{spec.function(), args, source, later,
                            std::max<uint32_t>(1, spec.num_returns()),
                            TaskId::FromBinary(spec.task_id()).Hex()});
      wake = !signalled_;
      signalled_ = true;
    }
    if (wake) {
      uint64_t one = 1;
      ssize_t n = write(fd_, &one, sizeof(one));
      (void)n;  // (it only fails when the counter is full: the loop is awake then)
    }
    return true;
  }
  // On the loop: what came since the last time.
  std::deque<Call> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t count;
    ssize_t n = read(fd_, &count, sizeof(count));
    (void)n;
    signalled_ = false;
    return std::exchange(calls_, {});
  }

 private:
  std::mutex mu_;
  int fd_ = -1;
  std::set<std::string, std::less<>> methods_;
  std::deque<Call> calls_;
  bool signalled_ = false;
};

// (Never destroyed: the executor's thread may outlive the module.)
AsyncCalls& RoutedCalls() {
  static auto* calls = new AsyncCalls();
  return *calls;
}

}  // namespace

void BindTasks(py::module_& m) {
  py::class_<Completion, std::shared_ptr<Completion>>(m, "Completion")
      .def("ok",
           [](Completion& c, size_t size, const py::list& parts, const py::list& nested) {
             auto value = std::make_shared<ReturnValues>();
             value->push_back(PartsValue(size, parts, Handles(nested)));
             c.Finish([value] { return std::move(*value); });
           })
      .def("ok_multi",
           [](Completion& c, const py::list& values) {
             auto out = std::make_shared<ReturnValues>(ValuesFrom(values));
             c.Finish([out] { return std::move(*out); });
           })
      .def("error",
           [](Completion& c, const std::string& type, const std::string& message,
              const py::bytes& payload) {
             std::string p(payload);
             c.Finish([type, message, p]() -> ReturnValues {
               throw ForeignTaskError(type, message, p);
             });
           })
      // An argument's device objects went with their producer: the caller may rebuild it.
      .def("lost", [](Completion& c, const std::string& message) {
        c.Finish([message]() -> ReturnValues { throw ObjectLostError(message); });
      });

  // In a worker process: runs tasks until the daemon ends the worker (the process exits).
  // `execute(function, args)` runs one task: args are read-only memoryviews of the encoded
  // arguments; it returns ("ok", bytes, [handles]) or ("error", type, message, payload).
  m.def("current_actor", [] {
    std::shared_ptr<ProcessRuntime> core = CurrentRuntime();
    ReleaseGil release;
    return core->CurrentActor();
  });
  m.def("exit_actor", [](const std::string& reason) {
    std::shared_ptr<ProcessRuntime> core = CurrentRuntime();
    ReleaseGil release;
    core->ExitActor(reason);
  });
  m.def("take_cancelled", [] {
    ReleaseGil release;
    return Cancelled().Take();
  });
  // An async actor: its calls of `methods` go to its event loop without the executor's thread
  // taking the GIL; the loop watches the returned descriptor and takes them (take_async_calls).
  m.def("route_async_calls",
        [](std::vector<std::string> methods) { return RoutedCalls().Route(std::move(methods)); });
  // [(descriptor, [argument views], completion, num_returns, task id)] queued since the last take.
  m.def("take_async_calls", [] {
    std::deque<AsyncCalls::Call> calls;
    {
      ReleaseGil release;
      calls = RoutedCalls().Take();
    }
    py::list out;
    for (auto& c : calls) {
      py::list views;
      for (const auto& a : c.args) views.append(Pinned{a, c.source});
      auto completion = std::make_shared<Completion>();
      completion->later = std::move(c.later);
      out.append(py::make_tuple(c.descriptor, views, completion, c.num_returns, c.task_id));
    }
    return out;
  });
  m.def("run_worker", [](py::object execute) {
    auto holder = std::make_shared<py::object>(std::move(execute));
    SetCallCanceller([](const TaskId& task) { Cancelled().Push(task.Hex()); });
    SetForeignExecutor([holder](const rpc::TaskSpec& spec,
                                const std::vector<std::string_view>& args,
                                const std::shared_ptr<const void>& source,
                                const ReplyLater& later) -> ReturnValues {
      if (RoutedCalls().Offer(spec, args, source, later))
        throw ReplyDeferred{};  // the loop answers it
      // Waiting for the GIL is not blocking: another thread would only wait for it too.
      std::optional<ExcusedWait> excused(std::in_place);
      py::gil_scoped_acquire gil;
      excused.reset();
      py::list views;
      for (const auto& a : args)
        views.append(Pinned{a, source});  // zero-copy reads keep the args alive
      auto completion = std::make_shared<Completion>();
      completion->later = later;
      py::tuple out;
      try {
        const char* kind = spec.has_actor_creation()  ? "create"
                           : !spec.actor_id().empty() ? "method"
                                                      : "task";
        out = (*holder)(kind, spec.function(), views, spec.streaming(), completion,
                        std::max<uint32_t>(1, spec.num_returns()),
                        TaskId::FromBinary(spec.task_id()).Hex())
                  .cast<py::tuple>();
      } catch (py::error_already_set& e) {
        throw std::runtime_error(std::string("the Python worker failed: ") + e.what());
      }
      std::string kind = out[0].cast<std::string>();
      if (kind == "deferred") throw ReplyDeferred{};  // the completion answers later
      // An argument's device objects went with their producer: the caller may rebuild it.
      if (kind == "lost") throw ObjectLostError(out[1].cast<std::string>());
      if (kind == "error") {
        throw ForeignTaskError(out[1].cast<std::string>(), out[2].cast<std::string>(),
                               out[3].cast<std::string>());
      }
      if (kind == "ok_multi") return ValuesFrom(out[1].cast<py::list>());
      ReturnValues values;
      values.push_back(PartsValue(out[1].cast<size_t>(), out[2].cast<py::list>(),
                                  Handles(out[3].cast<py::list>())));
      return values;
    });
    {
      ReleaseGil release;
      Init();  // never returns in a worker process
    }
  });

  m.def(
      "submit_task",
      [](const std::string& function, const py::list& args, const py::dict& options) {
        TaskOptions t = TaskOptionsFrom(options);
        std::vector<internal::SerializedArg> packed = PackArgs(args);
        ReleaseGil release;
        return internal::SubmitTask(function, std::move(packed), t);
      },
      py::arg("function"), py::arg("args"), py::arg("options"));
  // A task with num_returns > 1: the handles of its return objects, in order.
  m.def("submit_task_returns", [](const std::string& function, const py::list& args,
                                  const py::dict& options, uint32_t num_returns) {
    TaskOptions t = TaskOptionsFrom(options);
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    ReleaseGil release;
    return CurrentRuntime()->SubmitTaskReturns(function, std::move(packed), t, num_returns);
  });

  py::class_<internal::StreamHandle, std::shared_ptr<internal::StreamHandle>>(m, "StreamHandle")
      .def("next",
           [](internal::StreamHandle& s, int64_t timeout_ms) -> py::object {
             RefPtr r;
             {
               ReleaseGil release;
               r = s.Next(timeout_ms);
             }
             if (!r) return py::none();
             return py::cast(r);
           })
      .def("completion", &internal::StreamHandle::completion);

  m.def("submit_streaming_task",
        [](const std::string& function, const py::list& args, const py::dict& options) {
          TaskOptions t = TaskOptionsFrom(options);
          std::vector<internal::SerializedArg> packed = PackArgs(args);
          ReleaseGil release;
          return internal::SubmitStreamingTask(function, std::move(packed), t);
        });

  // In a streaming task: sends one value to the caller.
  m.def("stream_write", [](size_t size, const py::list& parts, const py::list& nested) {
    internal::EncodedValue v = PartsValue(size, parts, Handles(nested));
    ReleaseGil release;
    internal::StreamWrite(v);
  });

  py::class_<internal::ActorRef>(m, "ActorRef")
      .def_property_readonly("id",
                             [](const internal::ActorRef& a) { return py::bytes(a.id.Binary()); })
      .def_property_readonly("lifetime", [](const internal::ActorRef& a) { return a.lifetime; });

  m.def("create_actor",
        [](const std::string& factory, const py::list& args, const py::dict& options) {
          ActorOptions a = ActorOptionsFrom(options);
          std::vector<internal::SerializedArg> packed = PackArgs(args);
          ReleaseGil release;
          return internal::CreateActor(factory, std::move(packed), a);
        });
  m.def("submit_actor_task",
        [](const internal::ActorRef& actor, const std::string& method, const py::list& args) {
          std::vector<internal::SerializedArg> packed = PackArgs(args);
          ReleaseGil release;
          return internal::SubmitActorTask(actor, method, std::move(packed));
        });
  m.def("submit_actor_task_returns", [](const internal::ActorRef& actor, const std::string& method,
                                        const py::list& args, uint32_t num_returns) {
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    ReleaseGil release;
    return CurrentRuntime()->SubmitActorTaskReturns(actor, method, std::move(packed), num_returns);
  });
  m.def("make_actor_ref", [](const py::bytes& id, const RefPtr& lifetime) {
    std::string bin(id);
    if (!ActorId::IsValidBinary(bin)) throw InvalidArgumentError("not an actor id");
    return internal::ActorRef{ActorId::FromBinary(bin), lifetime};
  });
  m.def("get_actor", [](const std::string& name, const std::string& ray_namespace) {
    ReleaseGil release;
    return internal::GetActorByName(name, ray_namespace);
  });
  // What runs here: ids (hex; task and actor empty where none), the resources the running task
  // (or this actor) holds, and how often this actor was restarted.
  m.def("runtime_context", [] {
    RuntimeContextInfo c = CurrentRuntime()->RuntimeContext();
    py::dict d;
    d["job_id"] = c.job_id;
    d["worker_id"] = c.worker_id;
    d["node_id"] = c.node_id;
    d["task_id"] = c.task_id;
    d["actor_id"] = c.actor_id;
    d["resources"] = c.resources;
    d["gpu_ids"] = c.gpu_ids;
    d["actor_restarts"] = c.actor_restarts;
    d["actor_name"] = c.actor_name;
    d["is_worker"] = c.is_worker;
    return d;
  });
  m.def("kill_actor", [](const py::bytes& id, bool no_restart) {
    std::string bin(id);
    if (!ActorId::IsValidBinary(bin)) throw InvalidArgumentError("not an actor id");
    ReleaseGil release;
    internal::KillActor(ActorId::FromBinary(bin), no_restart);
  });

  m.def("create_placement_group",
        [](const std::vector<std::map<std::string, double>>& bundles, const std::string& strategy,
           const std::string& name, bool require_nvlink, bool detached) {
          PlacementGroupOptions o;
          o.bundles = bundles;
          o.name = name;
          o.require_nvlink = require_nvlink;
          o.detached = detached;
          if (strategy == "PACK") {
            o.strategy = PlacementStrategy::kPack;
          } else if (strategy == "SPREAD") {
            o.strategy = PlacementStrategy::kSpread;
          } else if (strategy == "STRICT_PACK") {
            o.strategy = PlacementStrategy::kStrictPack;
          } else if (strategy == "STRICT_SPREAD") {
            o.strategy = PlacementStrategy::kStrictSpread;
          } else {
            throw InvalidArgumentError(
                "strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, not " + strategy);
          }
          PlacementGroup g;
          {
            ReleaseGil release;
            g = CreatePlacementGroup(o);
          }
          return GroupTuple(g);
        });
  m.def("wait_placement_group", [](uint64_t id, int64_t timeout_ms) {
    ReleaseGil release;
    return PlacementGroup(id, "", PlacementStrategy::kPack, {})
        .Wait(std::chrono::milliseconds(timeout_ms));
  });
  m.def("remove_placement_group", [](uint64_t id) {
    ReleaseGil release;
    RemovePlacementGroup(PlacementGroup(id, "", PlacementStrategy::kPack, {}));
  });
  m.def("get_placement_group", [](const std::string& name) {
    PlacementGroup g;
    {
      ReleaseGil release;
      g = GetPlacementGroup(name);
    }
    return GroupTuple(g);
  });
  m.def("gpu_ids", &GetGpuIds);
  // In an actor's process, as it is created: the name its output lines carry.
  m.def("set_actor_label",
        [](const std::string& label) { CurrentRuntime()->SetActorLabel(label); });
  m.def("tool_path", [] { return internal::ToolPath(); });
  m.def("nodes", [] {
    std::vector<NodeInfo> nodes;
    {
      ReleaseGil release;
      nodes = Nodes();
    }
    py::list out;
    for (const auto& n : nodes) {
      py::dict d;
      d["NodeID"] = n.node_id;
      d["Alive"] = n.alive;
      d["IsHead"] = n.is_head;
      d["Address"] = n.address;
      d["Port"] = n.port;
      d["Hostname"] = n.hostname;
      d["SessionDir"] = n.session_dir;
      d["Labels"] = n.labels;
      d["DeathCause"] = n.death_cause;
      d["Resources"] = n.resources;
      d["Available"] = n.available;
      d["ObjectStoreCapacity"] = n.object_store_capacity;
      d["ObjectStoreUsed"] = n.object_store_used;
      out.append(d);
    }
    return out;
  });
  // The node's placement groups (placement_group_table).
  m.def("placement_groups", [] {
    rpc::StatusReply st;
    {
      ReleaseGil release;
      st = CurrentRuntime()->NodeStatus();
    }
    static const char* kStates[] = {"PENDING", "CREATED", "REMOVED"};
    static const char* kStrategies[] = {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"};
    py::list out;
    for (const auto& g : st.placement_groups()) {
      py::dict d;
      d["id"] = g.id();
      d["name"] = g.name();
      d["strategy"] = g.strategy() >= 0 && g.strategy() < 4 ? kStrategies[g.strategy()] : "PACK";
      d["state"] = g.state() >= 0 && g.state() < 3 ? kStates[g.state()] : "PENDING";
      d["job_id"] = JobId::FromBinary(g.job_id()).Hex();
      d["detached"] = g.detached();
      py::list bundles;
      for (const auto& b : g.bundles()) {
        py::dict bd;
        for (const auto& r : b.resources())
          bd[py::str(r.name())] = static_cast<double>(r.milli()) / 1000.0;
        bundles.append(bd);
      }
      d["bundles"] = bundles;
      out.append(d);
    }
    return out;
  });
  m.def("object_store_stats", [] {
    ObjectStoreStats st;
    {
      ReleaseGil release;
      st = GetObjectStoreStats();
    }
    py::dict d;
    d["capacity"] = st.capacity;
    d["used"] = st.used;
    return d;
  });
}

}  // namespace prism::binding

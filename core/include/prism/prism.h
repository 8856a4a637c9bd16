// prism's C++ API. Include this header and nothing else.
//
//   int Square(int x) { return x * x; }
//   PRISM_REMOTE(Square);
//
//   int main() {
//     prism::Init();
//     auto ref = prism::Task(Square).Remote(3);
//     int nine = prism::Get(ref);
//     prism::Shutdown();
//   }
#pragma once

#include <prism/buffer.h>
#include <prism/errors.h>
#include <prism/ids.h>
#include <prism/internal/runtime_api.h>
#include <prism/object_ref.h>
#include <prism/options.h>
#include <prism/remote.h>
#include <prism/serialization.h>
#include <prism/stream.h>

#include <chrono>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace prism {

/// Starts (or joins) a cluster and connects this process to it. In a worker process started by
/// prism, Init() does not return: it runs the worker loop and exits the process when the node
/// daemon tells it to. So code before Init() runs in every worker; keep it free of side effects.
/// Throws RuntimeError if the daemon cannot be started or reached.
void Init(const InitOptions& options = {});
/// Disconnects; when Init() started the daemon, stops it and its workers and removes its files.
/// Objects not fetched are gone. Safe to call twice.
void Shutdown();
bool IsInitialized();
/// True in a worker process that prism started (the driver's executable re-run in worker mode).
/// A program can call Init() first thing when this is true, so that nothing else in main()
/// runs in workers.
bool IsWorkerProcess();
/// Counters of this process's runtime.
RuntimeStats GetRuntimeStats();
/// The object store of this process's node (asks the node daemon).
ObjectStoreStats GetObjectStoreStats();

/// Reserves resources in bundles, as Ray's placement_group(): the bundles are reserved together
/// or not at all, and while the node lacks room the group waits (PlacementGroup::Wait). Tasks
/// and actors go into it with TaskOptions/ActorOptions::placement_group. Throws
/// InvalidArgumentError for a bad bundle or a taken name, InfeasibleError for a group this
/// cluster can never hold.
PlacementGroup CreatePlacementGroup(const PlacementGroupOptions& options);
/// Gives its resources back; actors in it die (ActorDiedError says why) and tasks running in it
/// are stopped (their retries then fail: the group is gone). Throws if it does not exist.
void RemovePlacementGroup(const PlacementGroup& group);
/// The placement group named `name`; throws InvalidArgumentError when there is none.
PlacementGroup GetPlacementGroup(const std::string& name);
/// The cluster's nodes: this process's node first (what it has free now), then the others as
/// the head last reported them, the dead included (alive == false).
std::vector<NodeInfo> Nodes();
/// The resources of all living nodes together: totals, and what is free now.
std::map<std::string, double> ClusterResources();
std::map<std::string, double> AvailableResources();
/// The id (hex) of the node this process runs on, as Nodes() lists it (Ray's
/// get_runtime_context().get_node_id()).
std::string GetNodeId();
/// Inside a task or actor: the GPUs (device instance indices) it holds; empty elsewhere.
std::vector<int> GetGpuIds();

/// Writes the task events this cluster's workers recorded (InitOptions::timeline) as a Chrome
/// trace: tasks per worker and thread, and GPU tasks' device time per stream. Open it in
/// Perfetto (ui.perfetto.dev) or chrome://tracing. Throws RuntimeError if it cannot be written.
void WriteTimeline(const std::string& path);

/// A remote function known by name only, e.g. one registered in a worker but not declared here.
/// Arguments are encoded as their own types; the worker checks them against the function.
template <typename R>
struct CppFunction {
  explicit CppFunction(std::string n) : name(std::move(n)) {}
  std::string name;
};

/// A Python function known by its module and name ("math.factorial", "mypkg.mod.fn"), called
/// from C++: it runs in a Python worker (InitOptions::python_executable), arguments and result
/// travel as msgpack (numbers, strings, vectors, maps), and R must match what it returns.
template <typename R>
struct PyFunction {
  explicit PyFunction(std::string n) : name(std::move(n)) {}
  std::string name;
};

namespace internal {

template <typename T>
struct IsObjectRef : std::false_type {};
template <typename T>
struct IsObjectRef<ObjectRef<T>> : std::true_type {};

// Encodes one argument for parameter type P (or, with P = void, as the argument's own type).
template <typename P, typename A>
SerializedArg PackArg(A&& arg) {
  using D = std::decay_t<A>;
  if constexpr (IsObjectRef<D>::value) {
    if constexpr (!std::is_void_v<P>) {
      static_assert(std::is_convertible_v<typename D::ValueType, std::decay_t<P>>,
                    "an ObjectRef argument's value type does not match the parameter");
    }
    if (!arg.valid()) throw InvalidArgumentError("an empty ObjectRef was passed as an argument");
    return SerializedArg{arg.handle(), {}, {}};
  } else if constexpr (std::is_void_v<P> || std::is_same_v<std::decay_t<P>, D>) {
    return MakeArg(Encode(arg));
  } else {
    static_assert(std::is_convertible_v<A&&, std::decay_t<P>>,
                  "an argument's type does not convert to the remote function's parameter");
    std::decay_t<P> converted = static_cast<std::decay_t<P>>(std::forward<A>(arg));
    return MakeArg(Encode(converted));
  }
}

template <typename Params, typename... A, size_t... I>
std::vector<SerializedArg> PackArgs(std::index_sequence<I...>, A&&... args) {
  std::vector<SerializedArg> out;
  out.reserve(sizeof...(A));
  (out.push_back(PackArg<std::tuple_element_t<I, Params>>(std::forward<A>(args))), ...);
  return out;
}

inline std::string RegisteredName(const void* address) {
  CheckInitialized();
  const std::string* name = FunctionRegistry::Instance().NameOf(address);
  if (name == nullptr) {
    throw InvalidArgumentError(
        "this function is not registered as a remote function; add PRISM_REMOTE(name) next to "
        "its definition");
  }
  return *name;
}

}  // namespace internal

/// Builds a task call for a registered function: prism::Task(f).Options({...}).Remote(args...).
template <typename F>
class TaskCaller;

template <typename R, typename... P>
class TaskCaller<R (*)(P...)> {
 public:
  explicit TaskCaller(R (*f)(P...)) : f_(f) {}
  TaskCaller& Options(TaskOptions options) {
    options_ = std::move(options);
    return *this;
  }
  /// Submits the task and returns at once. Arguments are values (encoded now) or ObjectRefs
  /// (resolved to values before the task runs). Throws InvalidArgumentError if the function is
  /// not registered.
  template <typename... A>
  ObjectRef<R> Remote(A&&... args) {
    static_assert(sizeof...(A) == sizeof...(P), "wrong number of arguments for this function");
    std::string name = internal::RegisteredName(reinterpret_cast<const void*>(f_));
    auto packed = internal::PackArgs<std::tuple<P...>>(std::index_sequence_for<A...>{},
                                                       std::forward<A>(args)...);
    return ObjectRef<R>(internal::SubmitTask(name, std::move(packed), options_));
  }

 private:
  R (*f_)(P...);
  TaskOptions options_;
};

/// A streaming function `void F(StreamWriter<T>&, P...)`: Remote() returns the stream of its
/// values. Such a task is retried like any other after its worker died; the new run's first
/// values, which the caller has already, are not sent again (so a streaming function should
/// write the same values each time it runs).
template <typename T, typename... P>
class TaskCaller<void (*)(StreamWriter<T>&, P...)> {
 public:
  explicit TaskCaller(void (*f)(StreamWriter<T>&, P...)) : f_(f) {}
  TaskCaller& Options(TaskOptions options) {
    options_ = std::move(options);
    return *this;
  }
  template <typename... A>
  ObjectRefStream<T> Remote(A&&... args) {
    static_assert(sizeof...(A) == sizeof...(P), "wrong number of arguments for this function");
    std::string name = internal::RegisteredName(reinterpret_cast<const void*>(f_));
    auto packed = internal::PackArgs<std::tuple<P...>>(std::index_sequence_for<A...>{},
                                                       std::forward<A>(args)...);
    return ObjectRefStream<T>(internal::SubmitStreamingTask(name, std::move(packed), options_));
  }

 private:
  void (*f_)(StreamWriter<T>&, P...);
  TaskOptions options_;
};

namespace internal {

/// A task call of a function known by name (arguments encoded as their own types), run by the
/// given worker runtime ("" this driver's kind, "cpp", "python").
template <typename R>
class NamedTaskCaller {
 public:
  NamedTaskCaller(std::string function, std::string name, std::string runtime)
      : function_(std::move(function)), name_(std::move(name)), runtime_(std::move(runtime)) {}
  NamedTaskCaller& Options(TaskOptions options) {
    options_ = std::move(options);
    return *this;
  }
  template <typename... A>
  ObjectRef<R> Remote(A&&... args) {
    CheckInitialized();
    std::vector<SerializedArg> packed;
    (packed.push_back(PackArg<void>(std::forward<A>(args))), ...);
    TaskOptions o = options_;
    if (!runtime_.empty()) o.runtime = runtime_;
    if (o.name.empty()) o.name = name_;
    return ObjectRef<R>(SubmitTask(function_, std::move(packed), o));
  }

 private:
  std::string function_, name_, runtime_;
  TaskOptions options_;
};

}  // namespace internal

template <typename R>
class TaskCaller<CppFunction<R>> : public internal::NamedTaskCaller<R> {
 public:
  explicit TaskCaller(CppFunction<R> f) : internal::NamedTaskCaller<R>(f.name, f.name, "") {}
};

template <typename R>
class TaskCaller<PyFunction<R>> : public internal::NamedTaskCaller<R> {
 public:
  explicit TaskCaller(PyFunction<R> f)
      : internal::NamedTaskCaller<R>("py:@" + f.name, f.name, "python") {
    if (f.name.empty() || f.name.find('|') != std::string::npos) {
      throw InvalidArgumentError("PyFunction takes \"module.function\"");
    }
  }
};

template <typename R, typename... P>
TaskCaller<R (*)(P...)> Task(R (*f)(P...)) {
  return TaskCaller<R (*)(P...)>(f);
}
template <typename R>
TaskCaller<CppFunction<R>> Task(CppFunction<R> f) {
  return TaskCaller<CppFunction<R>>(std::move(f));
}
template <typename R>
TaskCaller<PyFunction<R>> Task(PyFunction<R> f) {
  return TaskCaller<PyFunction<R>>(std::move(f));
}

/// A handle to an actor of class T. Copies are cheap and refer to the same actor; handles can be
/// passed to tasks and other actors (as arguments or inside values) and used there. Calls made
/// through the handles of one process run in the order they were made (with the default
/// max_concurrency of 1).
template <typename T>
class ActorHandle {
 public:
  ActorHandle() = default;
  explicit ActorHandle(internal::ActorRef ref) : ref_(std::move(ref)) {}
  const ActorId& id() const { return ref_.id; }
  bool valid() const { return ref_.lifetime != nullptr; }
  const internal::ActorRef& ref() const { return ref_; }

  template <typename R, typename... P>
  class MethodCaller {
   public:
    MethodCaller(internal::ActorRef ref, std::string method)
        : ref_(std::move(ref)), method_(std::move(method)) {}
    /// Sends the call and returns at once; arguments as for Task(f).Remote().
    template <typename... A>
    ObjectRef<R> Remote(A&&... args) {
      static_assert(sizeof...(A) == sizeof...(P), "wrong number of arguments for this method");
      auto packed = internal::PackArgs<std::tuple<P...>>(std::index_sequence_for<A...>{},
                                                         std::forward<A>(args)...);
      return ObjectRef<R>(internal::SubmitActorTask(ref_, method_, std::move(packed)));
    }

   private:
    internal::ActorRef ref_;
    std::string method_;
  };

  /// handle.Task(&T::Method).Remote(args...): the method must be registered with PRISM_REMOTE.
  template <typename R, typename... P>
  MethodCaller<R, P...> Task(R (T::*m)(P...)) const {
    return MethodCaller<R, P...>(Checked(), MethodNameOf(m));
  }
  template <typename R, typename... P>
  MethodCaller<R, P...> Task(R (T::*m)(P...) const) const {
    return MethodCaller<R, P...>(Checked(), MethodNameOf(m));
  }

 private:
  const internal::ActorRef& Checked() const {
    internal::CheckInitialized();
    if (!valid()) throw InvalidArgumentError("a call through an empty ActorHandle");
    return ref_;
  }
  template <typename M>
  static std::string MethodNameOf(M m) {
    const std::string* name =
        internal::FunctionRegistry::Instance().MethodName(internal::MethodKey(m));
    if (name == nullptr) {
      throw InvalidArgumentError(
          "this method is not registered as an actor method; add it to PRISM_REMOTE(factory, "
          "&Class::Method, ...)");
    }
    return *name;
  }
  internal::ActorRef ref_;
};

/// Builds an actor: prism::Actor(factory).Options({...}).Remote(args...) -> ActorHandle<T>, where
/// the factory (registered with PRISM_REMOTE) returns T*, unique_ptr<T> or shared_ptr<T>.
template <typename F>
class ActorCreator;

template <typename R, typename... P>
class ActorCreator<R (*)(P...)> {
 public:
  using T = typename internal::ActorObjectOf<R>::type;
  static_assert(std::is_class_v<T>, "an actor factory returns T*, unique_ptr<T> or shared_ptr<T>");
  explicit ActorCreator(R (*f)(P...)) : f_(f) {}
  ActorCreator& Options(ActorOptions options) {
    options_ = std::move(options);
    return *this;
  }
  /// Creates the actor and returns its handle at once; calls wait until it is ready. Throws
  /// InvalidArgumentError for an unregistered factory, bad options or a name in use. A factory
  /// that throws makes the actor dead: its calls fail with ActorDiedError saying why.
  template <typename... A>
  ActorHandle<T> Remote(A&&... args) {
    static_assert(sizeof...(A) == sizeof...(P), "wrong number of arguments for this factory");
    std::string name = internal::RegisteredName(reinterpret_cast<const void*>(f_));
    auto packed = internal::PackArgs<std::tuple<P...>>(std::index_sequence_for<A...>{},
                                                       std::forward<A>(args)...);
    return ActorHandle<T>(internal::CreateActor(name, std::move(packed), options_));
  }

 private:
  R (*f_)(P...);
  ActorOptions options_;
};

template <typename R, typename... P>
ActorCreator<R (*)(P...)> Actor(R (*factory)(P...)) {
  return ActorCreator<R (*)(P...)>(factory);
}

/// Kills the actor's process and returns once it is dead. Calls in flight and later calls fail
/// with ActorDiedError; with no_restart = false, the actor restarts instead if it has restarts
/// left.
template <typename T>
void Kill(const ActorHandle<T>& actor, bool no_restart = true) {
  internal::CheckInitialized();
  if (!actor.valid()) throw InvalidArgumentError("Kill of an empty ActorHandle");
  internal::KillActor(actor.id(), no_restart);
}

/// Cancels the task whose result `ref` is (this process must have submitted it): a task still
/// waiting for its arguments or a worker does not run; a running one finishes, but its result is
/// dropped; with force = true, the worker running it is killed at once (other tasks it had queued
/// are retried elsewhere). A `Get` of `ref` then throws TaskCancelledError. A task already
/// finished keeps its result. Actor calls not yet sent are dropped; running ones finish, and
/// force has no further effect on them (use Kill to stop an actor).
template <typename T>
void Cancel(const ObjectRef<T>& ref, bool force = false) {
  internal::CheckInitialized();
  if (!ref.valid()) throw InvalidArgumentError("Cancel of an empty ObjectRef");
  internal::CancelTask(*ref.handle(), force);
}

/// The live actor named `name` in namespace `ray_namespace` (an actor created with
/// ActorOptions::name, by any driver or worker of the cluster; "" is the default namespace).
/// Throws InvalidArgumentError when no live actor has that name there. T must be its class:
/// calls are checked against T's registered methods in the actor.
template <typename T>
ActorHandle<T> GetActor(const std::string& name, const std::string& ray_namespace = "") {
  internal::CheckInitialized();
  return ActorHandle<T>(internal::GetActorByName(name, ray_namespace));
}

/// No timeout.
inline constexpr std::chrono::milliseconds kNoTimeout{-1};

namespace internal {
template <typename T>
T Decode(const EncodedView& value, const ObjectId& id) {
  if constexpr (std::is_void_v<T>) {
    return;
  } else {
    try {
      return Unpack<T>(value.bytes, value.keep);
    } catch (const DecodeError& e) {
      throw InvalidArgumentError("object " + id.Hex() + ": " + e.what());
    }
  }
}
}  // namespace internal

/// Blocks until the object is ready and returns its value. Throws the task's error
/// (TaskError, WorkerCrashedError, InfeasibleError, ...) or GetTimeoutError.
template <typename T>
T Get(const ObjectRef<T>& ref, std::chrono::milliseconds timeout = kNoTimeout) {
  if (!ref.valid()) throw InvalidArgumentError("Get of an empty ObjectRef");
  for (int rebuilt = 0;; ++rebuilt) {
    auto values = internal::GetEncoded({ref.handle().get()}, timeout.count());
    try {
      return internal::Decode<T>(values[0], ref.id());
    } catch (const ObjectLostError&) {
      // Device objects in it went with their producer: the owner rebuilds them (lineage).
      if (rebuilt == 2 || !internal::RebuildLost(*ref.handle())) throw;
    }
  }
}

/// Blocks until every object is ready; values in the order of `refs`.
template <typename T>
std::vector<T> Get(const std::vector<ObjectRef<T>>& refs,
                   std::chrono::milliseconds timeout = kNoTimeout) {
  std::vector<const internal::RefHandle*> handles;
  handles.reserve(refs.size());
  for (const auto& r : refs) {
    if (!r.valid()) throw InvalidArgumentError("Get of an empty ObjectRef");
    handles.push_back(r.handle().get());
  }
  auto values = internal::GetEncoded(handles, timeout.count());
  std::vector<T> out;
  out.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    try {
      out.push_back(internal::Decode<T>(values[i], refs[i].id()));
    } catch (const ObjectLostError&) {
      if (!internal::RebuildLost(*refs[i].handle())) throw;
      out.push_back(Get(refs[i], timeout));  // rebuilt through its task (lineage)
    }
  }
  return out;
}

/// Stores a value and returns a ref to it; this process owns it. Small values stay in this
/// process's memory; large ones are written once into the node's shared-memory object store,
/// where every process of the node reads them in place. Refs inside the value stay alive as
/// long as it does. Throws ObjectStoreFullError when the store cannot hold it.
template <typename T>
ObjectRef<std::decay_t<T>> Put(const T& value) {
  internal::CheckInitialized();
  return ObjectRef<std::decay_t<T>>(internal::Put(internal::Encode(value)));
}

template <typename T>
struct WaitResult {
  std::vector<ObjectRef<T>> ready;
  std::vector<ObjectRef<T>> unready;
};

/// Returns once `num_returns` of `refs` are ready (value or error) or the timeout passed,
/// whichever comes first; ready refs keep their order in `refs`. Never throws a task's error.
template <typename T>
WaitResult<T> Wait(const std::vector<ObjectRef<T>>& refs, size_t num_returns,
                   std::chrono::milliseconds timeout = kNoTimeout) {
  if (num_returns > refs.size()) {
    throw InvalidArgumentError("Wait: num_returns (" + std::to_string(num_returns) +
                               ") is larger than the number of refs (" +
                               std::to_string(refs.size()) + ")");
  }
  std::vector<const internal::RefHandle*> handles;
  handles.reserve(refs.size());
  for (const auto& r : refs) {
    if (!r.valid()) throw InvalidArgumentError("Wait on an empty ObjectRef");
    handles.push_back(r.handle().get());
  }
  std::vector<bool> ready = internal::WaitReady(handles, num_returns, timeout.count());
  WaitResult<T> result;
  for (size_t i = 0; i < refs.size(); ++i) {
    (ready[i] ? result.ready : result.unready).push_back(refs[i]);
  }
  return result;
}

}  // namespace prism

// An actor handle inside a value travels as [actor id, the ref to its handle object].
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <typename T>
  struct pack<prism::ActorHandle<T>> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o,
                                        const prism::ActorHandle<T>& h) const {
      if (!h.valid()) throw prism::InvalidArgumentError("cannot send an empty ActorHandle");
      o.pack_array(2);
      std::string id = h.id().Binary();
      o.pack_bin(static_cast<uint32_t>(id.size()));
      o.pack_bin_body(id.data(), static_cast<uint32_t>(id.size()));
      o.pack(prism::ObjectRef<bool>(h.ref().lifetime));
      return o;
    }
  };
  template <typename T>
  struct convert<prism::ActorHandle<T>> {
    const msgpack::object& operator()(const msgpack::object& o, prism::ActorHandle<T>& h) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      const msgpack::object& id = o.via.array.ptr[0];
      if (id.type != msgpack::type::BIN ||
          !prism::ActorId::IsValidBinary({id.via.bin.ptr, id.via.bin.size})) {
        throw msgpack::type_error();
      }
      auto lifetime = o.via.array.ptr[1].as<prism::ObjectRef<bool>>();
      h = prism::ActorHandle<T>(prism::internal::ActorRef{
          prism::ActorId::FromBinary({id.via.bin.ptr, id.via.bin.size}), lifetime.handle()});
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

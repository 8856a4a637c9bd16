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

/// A remote function known by name only, e.g. one registered in a worker but not declared here.
/// Arguments are encoded as their own types; the worker checks them against the function.
template <typename R>
struct CppFunction {
  explicit CppFunction(std::string n) : name(std::move(n)) {}
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

template <typename R>
class TaskCaller<CppFunction<R>> {
 public:
  explicit TaskCaller(CppFunction<R> f) : f_(std::move(f)) {}
  TaskCaller& Options(TaskOptions options) {
    options_ = std::move(options);
    return *this;
  }
  template <typename... A>
  ObjectRef<R> Remote(A&&... args) {
    internal::CheckInitialized();
    std::vector<internal::SerializedArg> packed;
    (packed.push_back(internal::PackArg<void>(std::forward<A>(args))), ...);
    return ObjectRef<R>(internal::SubmitTask(f_.name, std::move(packed), options_));
  }

 private:
  CppFunction<R> f_;
  TaskOptions options_;
};

template <typename R, typename... P>
TaskCaller<R (*)(P...)> Task(R (*f)(P...)) {
  return TaskCaller<R (*)(P...)>(f);
}
template <typename R>
TaskCaller<CppFunction<R>> Task(CppFunction<R> f) {
  return TaskCaller<CppFunction<R>>(std::move(f));
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
  auto values = internal::GetEncoded({ref.handle().get()}, timeout.count());
  return internal::Decode<T>(values[0], ref.id());
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
    out.push_back(internal::Decode<T>(values[i], refs[i].id()));
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

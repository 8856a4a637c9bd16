// Registration of remote functions: PRISM_REMOTE(f) makes `f` callable as a task.
#pragma once

#include <prism/errors.h>
#include <prism/serialization.h>
#include <prism/stream.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace prism::internal {

/// Thrown by an invoker when an argument cannot be decoded as its parameter's type.
class ArgumentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Decodes the arguments, calls the function, and returns the encoded result. Throws
/// ArgumentError for bad arguments; anything the function throws passes through. `source`
/// keeps the argument bytes alive (zero-copy argument types hold on to it).
using Invoker = std::function<EncodedValue(const std::vector<std::string_view>& args,
                                           const std::shared_ptr<const void>& source)>;

struct FunctionEntry {
  std::string name;
  size_t arity = 0;
  Invoker invoke;
  bool streaming = false;  // takes a StreamWriter first: runs as a streaming task
};

/// An actor factory: decodes the arguments and makes the actor's object.
struct ActorFactoryEntry {
  std::string name;
  std::string type;  // the actor class
  std::function<std::shared_ptr<void>(const std::vector<std::string_view>& args,
                                      const std::shared_ptr<const void>& source)>
      create;
};

/// An actor method: decodes the arguments and calls it on the actor's object.
struct ActorMethodEntry {
  std::string name;  // "Class::Method"
  std::string type;  // the class
  std::function<EncodedValue(void* self, const std::vector<std::string_view>& args,
                             const std::shared_ptr<const void>& source)>
      invoke;
};

/// How a member function pointer is found again: its class and its bytes.
template <typename M>
std::string MethodKey(M m) {
  std::string key(typeid(M).name());
  key.append(reinterpret_cast<const char*>(&m), sizeof(m));
  return key;
}

/// The process-wide table of remote functions, filled by PRISM_REMOTE at static
/// initialisation, read-only once main() runs. Same binary, same table: the driver and its
/// workers agree on names because workers are the driver's own executable.
class FunctionRegistry {
 public:
  static FunctionRegistry& Instance() {
    static FunctionRegistry registry;
    return registry;
  }
  bool Register(std::string name, const void* address, size_t arity, Invoker invoke,
                bool streaming = false) {
    std::lock_guard<std::mutex> lock(mu_);
    names_[address] = name;
    by_name_[name] = FunctionEntry{name, arity, std::move(invoke), streaming};
    return true;
  }
  const FunctionEntry* Find(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &it->second;
  }
  const std::string* NameOf(const void* address) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = names_.find(address);
    return it == names_.end() ? nullptr : &it->second;
  }
  void RegisterFactory(const void* address, ActorFactoryEntry e) {
    std::lock_guard<std::mutex> lock(mu_);
    names_[address] = e.name;
    factories_[e.name] = std::move(e);
  }
  const ActorFactoryEntry* FindFactory(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = factories_.find(name);
    return it == factories_.end() ? nullptr : &it->second;
  }
  void RegisterMethod(std::string key, ActorMethodEntry e) {
    std::lock_guard<std::mutex> lock(mu_);
    method_names_[std::move(key)] = e.name;
    methods_[e.name] = std::move(e);
  }
  const ActorMethodEntry* FindMethod(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = methods_.find(name);
    return it == methods_.end() ? nullptr : &it->second;
  }
  const std::string* MethodName(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = method_names_.find(key);
    return it == method_names_.end() ? nullptr : &it->second;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, ActorFactoryEntry> factories_;
  std::unordered_map<std::string, ActorMethodEntry> methods_;
  std::unordered_map<std::string, std::string> method_names_;
  std::unordered_map<const void*, std::string> names_;
  std::unordered_map<std::string, FunctionEntry> by_name_;
};

template <typename T>
std::decay_t<T> DecodeArg(const std::string& function, size_t index, std::string_view bytes,
                          const std::shared_ptr<const void>& source) {
  try {
    return Unpack<std::decay_t<T>>(bytes, source);
  } catch (const DecodeError& e) {
    throw ArgumentError("argument " + std::to_string(index) + " of " + function + ": " + e.what());
  }
}

template <typename R, typename... P, size_t... I>
EncodedValue InvokeWithIndices(const std::string& name, R (*f)(P...),
                               const std::vector<std::string_view>& args,
                               const std::shared_ptr<const void>& source,
                               std::index_sequence<I...>) {
  std::tuple<std::decay_t<P>...> decoded{DecodeArg<P>(name, I, args[I], source)...};
  if constexpr (std::is_void_v<R>) {
    f(std::move(std::get<I>(decoded))...);
    return EncodeOwned(msgpack::type::nil_t());
  } else {
    return EncodeOwned(f(std::move(std::get<I>(decoded))...));
  }
}

template <typename T>
struct ActorObjectOf {
  using type = void;
};
template <typename T>
struct ActorObjectOf<T*> {
  using type = T;
};
template <typename T>
struct ActorObjectOf<std::unique_ptr<T>> {
  using type = T;
};
template <typename T>
struct ActorObjectOf<std::shared_ptr<T>> {
  using type = T;
};
/// A factory returns a pointer to a class object (T*, unique_ptr<T>, shared_ptr<T>).
template <typename R>
inline constexpr bool kIsFactoryResult = std::is_class_v<typename ActorObjectOf<R>::type>;

template <typename R, typename... P, size_t... I>
std::shared_ptr<void> CreateWithIndices(const std::string& name, R (*f)(P...),
                                        const std::vector<std::string_view>& args,
                                        const std::shared_ptr<const void>& source,
                                        std::index_sequence<I...>) {
  using T = typename ActorObjectOf<R>::type;
  std::tuple<std::decay_t<P>...> decoded{DecodeArg<P>(name, I, args[I], source)...};
  return std::shared_ptr<T>(f(std::move(std::get<I>(decoded))...));
}

template <typename T, typename M, typename R, typename... P, size_t... I>
EncodedValue CallWithIndices(const std::string& name, M m, void* self,
                             const std::vector<std::string_view>& args,
                             const std::shared_ptr<const void>& source, std::index_sequence<I...>) {
  std::tuple<std::decay_t<P>...> decoded{DecodeArg<P>(name, I, args[I], source)...};
  T* obj = static_cast<T*>(self);
  if constexpr (std::is_void_v<R>) {
    (obj->*m)(std::move(std::get<I>(decoded))...);
    return EncodeOwned(msgpack::type::nil_t());
  } else {
    return EncodeOwned((obj->*m)(std::move(std::get<I>(decoded))...));
  }
}

template <typename T, typename M, typename R, typename... P>
bool RegisterMethodImpl(const std::string& name, M m) {
  ActorMethodEntry e;
  e.name = name;
  e.type = Demangle(typeid(T).name());
  e.invoke = [name, m](void* self, const std::vector<std::string_view>& args,
                       const std::shared_ptr<const void>& source) -> EncodedValue {
    if (args.size() != sizeof...(P)) {
      throw ArgumentError(name + " takes " + std::to_string(sizeof...(P)) +
                          " arguments, the call carried " + std::to_string(args.size()));
    }
    return CallWithIndices<T, M, R, P...>(name, m, self, args, source,
                                          std::index_sequence_for<P...>{});
  };
  FunctionRegistry::Instance().RegisterMethod(MethodKey(m), std::move(e));
  return true;
}

template <typename R, typename T, typename... P>
bool Register(const std::string& name, R (T::*m)(P...)) {
  return RegisterMethodImpl<T, R (T::*)(P...), R, P...>(name, m);
}
template <typename R, typename T, typename... P>
bool Register(const std::string& name, R (T::*m)(P...) const) {
  return RegisterMethodImpl<T, R (T::*)(P...) const, R, P...>(name, m);
}

template <typename R, typename... P>
bool RegisterFunction(const char* name, R (*f)(P...));

template <typename T, typename... P, size_t... I>
void StreamWithIndices(const std::string& name, void (*f)(StreamWriter<T>&, P...),
                       const std::vector<std::string_view>& args,
                       const std::shared_ptr<const void>& source, std::index_sequence<I...>) {
  std::tuple<std::decay_t<P>...> decoded{DecodeArg<P>(name, I, args[I], source)...};
  StreamWriter<T> out;
  f(out, std::move(std::get<I>(decoded))...);
}

/// A streaming function: its StreamWriter is made by the worker, the rest are the arguments.
template <typename T, typename... P>
bool Register(const std::string& name, void (*f)(StreamWriter<T>&, P...)) {
  return FunctionRegistry::Instance().Register(
      name, reinterpret_cast<const void*>(f), sizeof...(P),
      [name, f](const std::vector<std::string_view>& args,
                const std::shared_ptr<const void>& source) -> EncodedValue {
        if (args.size() != sizeof...(P)) {
          throw ArgumentError(name + " takes " + std::to_string(sizeof...(P)) +
                              " arguments, the task carried " + std::to_string(args.size()));
        }
        StreamWithIndices(name, f, args, source, std::index_sequence_for<P...>{});
        return EncodeOwned(msgpack::type::nil_t());
      },
      /*streaming=*/true);
}

template <typename R, typename... P>
bool Register(const std::string& name, R (*f)(P...)) {
  if constexpr (kIsFactoryResult<R>) {
    ActorFactoryEntry e;
    e.name = name;
    e.type = Demangle(typeid(typename ActorObjectOf<R>::type).name());
    e.create = [name, f](const std::vector<std::string_view>& args,
                         const std::shared_ptr<const void>& source) -> std::shared_ptr<void> {
      if (args.size() != sizeof...(P)) {
        throw ArgumentError(name + " takes " + std::to_string(sizeof...(P)) +
                            " arguments, the call carried " + std::to_string(args.size()));
      }
      return CreateWithIndices(name, f, args, source, std::index_sequence_for<P...>{});
    };
    FunctionRegistry::Instance().RegisterFactory(reinterpret_cast<const void*>(f), std::move(e));
    return true;
  } else {
    return RegisterFunction(name.c_str(), f);
  }
}

/// The names in PRISM_REMOTE(a, &B::c, ...), split at top-level commas, spaces and a leading &
/// dropped.
inline std::vector<std::string> SplitRemoteNames(const char* list) {
  std::vector<std::string> out(1);
  int depth = 0;
  for (const char* p = list; *p != '\0'; ++p) {
    char c = *p;
    if (c == '(' || c == '<' || c == '[') depth++;
    if (c == ')' || c == '>' || c == ']') depth--;
    if (c == ',' && depth == 0) {
      out.emplace_back();
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || (c == '&' && out.back().empty())) continue;
    out.back() += c;
  }
  return out;
}

template <typename... F>
bool RegisterAll(const char* names, F... fs) {
  std::vector<std::string> n = SplitRemoteNames(names);
  size_t i = 0;
  (Register(n[i++], fs), ...);
  return true;
}

template <typename R, typename... P>
bool RegisterFunction(const char* name, R (*f)(P...)) {
  std::string fname(name);
  return FunctionRegistry::Instance().Register(
      fname, reinterpret_cast<const void*>(f), sizeof...(P),
      [fname, f](const std::vector<std::string_view>& args,
                 const std::shared_ptr<const void>& source) -> EncodedValue {
        if (args.size() != sizeof...(P)) {
          throw ArgumentError(fname + " takes " + std::to_string(sizeof...(P)) +
                              " arguments, the task carried " + std::to_string(args.size()));
        }
        return InvokeWithIndices(fname, f, args, source, std::index_sequence_for<P...>{});
      });
}

}  // namespace prism::internal

#define PRISM_INTERNAL_CONCAT2(a, b) a##b
#define PRISM_INTERNAL_CONCAT(a, b) PRISM_INTERNAL_CONCAT2(a, b)

/// Registers remote functions, actor factories and actor methods under their own names:
///   PRISM_REMOTE(Square);                                   // a remote function
///   PRISM_REMOTE(MakeCounter, &Counter::Add, &Counter::Get); // a factory (returns T*,
///                                                            // unique_ptr<T> or shared_ptr<T>)
///                                                            // and methods of T
/// Put it at namespace scope in the file that defines them (or anywhere linked into the
/// executable).
#define PRISM_REMOTE(...)                                                                        \
  [[maybe_unused]] static const bool PRISM_INTERNAL_CONCAT(prism_remote_registered_, __LINE__) = \
      ::prism::internal::RegisterAll(#__VA_ARGS__, __VA_ARGS__)

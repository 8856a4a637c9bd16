// Registration of remote functions: PRISM_REMOTE(f) makes `f` callable as a task.
#pragma once

#include <prism/errors.h>
#include <prism/serialization.h>

#include <functional>
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
};

/// The process-wide table of remote functions, filled by PRISM_REMOTE at static
/// initialisation, read-only once main() runs. Same binary, same table: the driver and its
/// workers agree on names because workers are the driver's own executable.
class FunctionRegistry {
 public:
  static FunctionRegistry& Instance() {
    static FunctionRegistry registry;
    return registry;
  }
  bool Register(std::string name, const void* address, size_t arity, Invoker invoke) {
    std::lock_guard<std::mutex> lock(mu_);
    names_[address] = name;
    by_name_[name] = FunctionEntry{name, arity, std::move(invoke)};
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

 private:
  mutable std::mutex mu_;
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

/// Registers a free function as a remote function under its own name. Put it at namespace
/// scope in the file that defines the function (or anywhere linked into the executable).
#define PRISM_REMOTE(f)                                                                        \
  [[maybe_unused]] static const bool PRISM_INTERNAL_CONCAT(prism_remote_registered_, __LINE__) = \
      ::prism::internal::RegisterFunction(#f, &f)

// Typed errors raised at the user API (prism::Get, prism::Task(...).Remote(), prism::Init()).
#pragma once

#include <stdexcept>
#include <string>

namespace prism {

/// Base of every error prism raises at its API. `what()` is a complete sentence for a person.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// The remote function threw. `remote_type()` is the exception's type name ("std::out_of_range"),
/// `remote_message()` its what().
class TaskError : public Error {
 public:
  TaskError(std::string function, std::string remote_type, std::string remote_message,
            std::string payload = {})
      : Error("task " + function + " raised " + remote_type + ": " + remote_message),
        function_(std::move(function)),
        remote_type_(std::move(remote_type)),
        remote_message_(std::move(remote_message)),
        payload_(std::move(payload)) {}
  const std::string& function() const { return function_; }
  const std::string& remote_type() const { return remote_type_; }
  const std::string& remote_message() const { return remote_message_; }
  /// The exception itself as its language serialized it (a Python task's pickled exception);
  /// empty for C++ tasks.
  const std::string& payload() const { return payload_; }

 private:
  std::string function_, remote_type_, remote_message_, payload_;
};

/// The worker running the task died (crash, SIGKILL, out of memory) and no retry was left.
class WorkerCrashedError : public Error {
 public:
  using Error::Error;
};

/// No node of this cluster can ever satisfy the task's resource request.
class InfeasibleError : public Error {
 public:
  using Error::Error;
};

/// `Get` or `Wait` ran past its timeout. The object may still become ready later.
class GetTimeoutError : public Error {
 public:
  using Error::Error;
};

/// The object's value is gone and cannot be rebuilt.
class ObjectLostError : public Error {
 public:
  using Error::Error;
};

/// The process that owned the object died, so its value can no longer be resolved.
class OwnerDiedError : public Error {
 public:
  using Error::Error;
};

/// The actor is dead (killed, its constructor threw, its restarts are used up, its owner died),
/// or died while running the call and the call had no retries left. what() names the actor.
class ActorDiedError : public Error {
 public:
  using Error::Error;
};

/// The task was cancelled with prism::Cancel before it produced its result.
class TaskCancelledError : public Error {
 public:
  using Error::Error;
};

/// The object store cannot hold the object: it is larger than the whole store, or the store
/// stayed full of objects that are in use (pinned) and cannot be spilled.
class ObjectStoreFullError : public Error {
 public:
  using Error::Error;
};

/// Bad use of the API: an unregistered function, arguments that do not match, a call before Init().
class InvalidArgumentError : public Error {
 public:
  using Error::Error;
};

/// The runtime itself failed (the node daemon is unreachable, a protocol error, ...).
class RuntimeError : public Error {
 public:
  using Error::Error;
};

}  // namespace prism

// The non-template entry points that prism's header templates call. Not for direct use.
#pragma once

#include <prism/ids.h>
#include <prism/options.h>
#include <prism/serialization.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace prism::internal {

/// The prism tool next to this library (or $PRISM_DAEMON_BIN): what starts node daemons.
std::string ToolPath();

/// Where an object's owner (the core worker that created it) listens.
struct OwnerAddress {
  std::string socket_path;
  std::string worker_id;     // binary WorkerId
  std::string node_id;       // binary NodeId
  std::string node_address;  // the node's cluster port ("IP:PORT"); empty on a single node
};

/// One live reference to an object. ObjectRef<T> copies share one handle; the runtime counts
/// handles, and frees the owner's copy of the value when the last handle of an id goes.
class RefHandle {
 public:
  RefHandle(ObjectId id, OwnerAddress owner, uint64_t runtime_generation)
      : id_(id),
        owner_(std::make_shared<const OwnerAddress>(std::move(owner))),
        generation_(runtime_generation) {}
  /// Shares `owner` (handles of one owner's objects need no copy of its address each).
  RefHandle(ObjectId id, std::shared_ptr<const OwnerAddress> owner, uint64_t runtime_generation)
      : id_(id), owner_(std::move(owner)), generation_(runtime_generation) {}
  ~RefHandle();
  RefHandle(const RefHandle&) = delete;
  RefHandle& operator=(const RefHandle&) = delete;
  const ObjectId& id() const { return id_; }
  const OwnerAddress& owner() const { return *owner_; }
  /// Which Init() of this process made the handle.
  uint64_t generation() const { return generation_; }

 private:
  ObjectId id_;
  std::shared_ptr<const OwnerAddress> owner_;
  uint64_t generation_;
};

/// A task argument: a msgpack-encoded value, or a reference resolved before the task runs.
struct SerializedArg {
  RefPtr ref;
  std::string value;
  std::vector<RefPtr> nested;  // refs inside `value`: kept alive until the task finished
};
/// An argument from an encoded value: inline when small, else Put into the object store first.
SerializedArg MakeArg(EncodedValue value);

/// The encoded bytes of an object, read in place; `keep` holds them (a store pin, a message).
struct EncodedView {
  std::string_view bytes;
  std::shared_ptr<const void> keep;
};

/// Submits a task; returns the handle of its single return object.
RefPtr SubmitTask(const std::string& function, std::vector<SerializedArg> args,
                  const TaskOptions& options);
/// Stores an encoded value owned by this process (large ones in the object store).
RefPtr Put(const EncodedValue& value);
/// A handle for a ref that arrived inside a value (a borrowed ref).
RefPtr MakeRef(const ObjectId& id, OwnerAddress owner);
/// The encoded values of `refs`, in order; throws prism's typed errors. timeout_ms < 0 waits
/// forever.
std::vector<EncodedView> GetEncoded(const std::vector<const RefHandle*>& refs, int64_t timeout_ms);
/// A reader found the device objects of `ref` lost (their producer died): true when this process
/// owns it and is rebuilding it through its task (a Get then waits for the new value).
bool RebuildLost(const RefHandle& ref);
/// Whether [p, p + n) lies in this process's mapping of its node's object store.
bool InObjectStore(const void* p, size_t n);
/// Which of `refs` are ready once `num_returns` are or the timeout passed.
std::vector<bool> WaitReady(const std::vector<const RefHandle*>& refs, size_t num_returns,
                            int64_t timeout_ms);
/// An actor as its handles know it: its id, and a ref to its handle object, whose lifetime
/// (counted like any object's, also across processes) is the actor's unless it is detached.
struct ActorRef {
  ActorId id;
  RefPtr lifetime;
};
/// Creates an actor with the registered factory `factory`; throws at once if the name is taken.
ActorRef CreateActor(const std::string& factory, std::vector<SerializedArg> args,
                     const ActorOptions& options);
/// Calls `method` (a registered "Class::Method") on the actor; returns its result's handle.
RefPtr SubmitActorTask(const ActorRef& actor, const std::string& method,
                       std::vector<SerializedArg> args);
void KillActor(const ActorId& id, bool no_restart);
/// Cancels the task (or actor call) whose result `ref` names; this process must have submitted it.
void CancelTask(const RefHandle& ref, bool force);
/// The live actor named `name`; throws InvalidArgumentError when there is none.
ActorRef GetActorByName(const std::string& name, const std::string& ray_namespace);
/// The caller's side of a streaming task.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  /// The next value's handle, or null once the stream ended (after the error's, if it failed).
  /// timeout_ms < 0 waits forever; else throws GetTimeoutError.
  virtual RefPtr Next(int64_t timeout_ms) = 0;
  /// The task's return object, ready once it ended.
  virtual RefPtr completion() const = 0;
};
/// Submits a streaming task (its function takes a StreamWriter first).
std::shared_ptr<StreamHandle> SubmitStreamingTask(const std::string& function,
                                                  std::vector<SerializedArg> args,
                                                  const TaskOptions& options);
/// Inside a streaming task: sends one value to its caller.
void StreamWrite(const EncodedValue& value);
/// Throws InvalidArgumentError unless prism::Init() ran in this process.
void CheckInitialized();

}  // namespace prism::internal

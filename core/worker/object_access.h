// Object access for the code of this process: handles to objects (this process's own, and
// borrowed ones), puts, gets and waits, and reads and writes of the node's object store. Values
// of this process's objects live in the MemoryStore (small ones) or the node's store (large ones);
// a borrowed object's value is fetched from its owner (OwnerClients) when first read. Any thread.
#pragma once

#include <prism/internal/runtime_api.h>

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_set>
#include <vector>

#include "base/mutex.h"
#include "object_store/store_client.h"
#include "worker/memory_store.h"
#include "worker/owner_clients.h"
#include "worker/task_context.h"

namespace prism {

class ObjectAccess {
 public:
  /// Who this process is: the owner its handles name, and which Init() made them.
  struct Self {
    internal::OwnerAddress address;  // complete (its node id known)
    uint64_t runtime_generation = 0;
  };
  /// `io`: the event loop fetches run on. `in_worker_task`: whether the calling thread runs a
  /// worker's task (a wait there lends its CPU: `blocked(true)`, then `blocked(false)`).
  ObjectAccess(Self self, MemoryStore& store, std::shared_ptr<StoreClient> host_store,
               OwnerClients& owners, TaskContext& context, asio::io_context& io,
               std::function<bool()> in_worker_task, std::function<void(bool)> blocked);
  ObjectAccess(const ObjectAccess&) = delete;
  ObjectAccess& operator=(const ObjectAccess&) = delete;

  /// A new handle to one of this process's objects (counted in the reference table).
  internal::RefPtr NewHandle(const ObjectId& id);
  /// A handle to one of this process's objects, sharing its address (the caller counted the ref).
  internal::RefPtr SelfHandle(const ObjectId& id) const;
  /// A handle for a ref that arrived inside a value: borrowed (registered at its owner) or this
  /// process's own (an error value when it was freed already).
  internal::RefPtr MakeRef(const ObjectId& id, internal::OwnerAddress owner);
  bool IsSelf(const internal::OwnerAddress& owner) const;
  /// Throws InvalidArgumentError for a handle made before the last Shutdown().
  void CheckCurrent(const internal::RefHandle& ref) const;

  /// Stores a value this process owns under the calling thread's next put id. Throws
  /// ObjectStoreFullError when a large value finds no room.
  internal::RefPtr Put(const internal::EncodedValue& value);
  /// The values of `refs`, in order (fetched from their owners if borrowed); throws prism's typed
  /// errors. timeout_ms < 0 waits forever.
  std::vector<internal::EncodedView> Get(const std::vector<const internal::RefHandle*>& refs,
                                         int64_t timeout_ms);
  /// Which of `refs` are ready once `num_returns` are, or the timeout passed.
  std::vector<bool> Wait(const std::vector<const internal::RefHandle*>& refs, size_t num_returns,
                         int64_t timeout_ms);
  /// Runs `ready` once the object is ready (see CoreWorker::WhenReady).
  void WhenReady(const internal::RefHandle& ref, std::function<void()> ready);

  /// host_store->Get, waiting (up to 10 s, or `deadline`) while an object's restore from disk
  /// finds the store full.
  std::vector<StoreClient::View> GetFromStore(
      const std::vector<ObjectId>& ids,
      std::optional<std::chrono::steady_clock::time_point> deadline);
  /// Writes a value into the node's object store as object `id`, owned by `owner`; retries for a
  /// while when the store is full of pinned objects. Throws ObjectStoreFullError, RuntimeError.
  void WriteToStore(const ObjectId& id, const internal::EncodedValue& value, const WorkerId& owner);

 private:
  /// Asks a borrowed object's owner for its value, once at a time per object.
  void EnsureFetched(const internal::RefHandle& ref);
  /// The ids of `refs`, each checked and (if borrowed) being fetched.
  std::vector<ObjectId> Prepare(const std::vector<const internal::RefHandle*>& refs);
  static std::optional<MemoryStore::Clock::time_point> DeadlineOf(int64_t timeout_ms);

  const Self self_;
  const WorkerId worker_id_;  // self_.address's
  const std::shared_ptr<const internal::OwnerAddress>
      self_address_;  // shared by this process's handles
  MemoryStore& store_;
  const std::shared_ptr<StoreClient> host_store_;  // shared with the pins of Buffers handed out
  OwnerClients& owners_;
  TaskContext& context_;
  asio::io_context& io_;
  const std::function<bool()> in_worker_task_;
  const std::function<void(bool)> blocked_;

  Mutex fetch_mu_;
  std::unordered_set<ObjectId> fetching_
      PRISM_GUARDED_BY(fetch_mu_);  // borrowed values being fetched
};

/// Throws the public API's exception for a stored error of object `id`.
[[noreturn]] void ThrowStored(const ObjectId& id, const rpc::TaskError& e);

}  // namespace prism

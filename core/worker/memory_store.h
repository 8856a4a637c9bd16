// The owner's in-process object table: values of small objects, errors, and who waits for them.
#pragma once

#include "base/thread_annotations.h"

#include "base/status.h"
#include "prism.pb.h"

#include <prism/ids.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace prism {

/// A ready object: its encoded value, or the error that stands in its place.
struct StoredObject {
  std::shared_ptr<const std::string> data;
  rpc::TaskError error;  // kind() != ERROR_NONE for an error
  bool is_error() const { return error.kind() != rpc::ERROR_NONE; }
  static StoredObject Value(std::string bytes) {
    return StoredObject{std::make_shared<const std::string>(std::move(bytes)), {}};
  }
  static StoredObject Error(rpc::ErrorKind kind, std::string message, std::string type_name = "") {
    StoredObject o;
    o.error.set_kind(kind);
    o.error.set_message(std::move(message));
    o.error.set_type_name(std::move(type_name));
    return o;
  }
};

/// Entries live while local references exist (AddRef/RemoveRef). Thread-safe; callbacks run on
/// the thread that made the object ready, outside the lock.
class MemoryStore {
 public:
  using Callback = std::function<void(const StoredObject&)>;
  using Clock = std::chrono::steady_clock;

  void AddRef(const ObjectId& id);
  /// Drops one reference; the entry and its value go with the last one, and callbacks still
  /// waiting for it get an object-lost error.
  void RemoveRef(const ObjectId& id);
  /// Makes an object ready. Ignored (returns false) when nobody references it any more, or it
  /// is ready already (a stale duplicate).
  bool Put(const ObjectId& id, StoredObject object);
  std::optional<StoredObject> GetIfReady(const ObjectId& id) const;
  /// Whether the id is referenced here (pending or ready).
  bool Contains(const ObjectId& id) const;
  /// Runs `cb` once the object is ready (now, if it is). Returns false, without running `cb`,
  /// when the id is not referenced here.
  bool OnReady(const ObjectId& id, Callback cb);
  /// Blocks until at least `num_ready` of `ids` are ready or `deadline` passes; returns which
  /// are ready. `deadline` = nullopt waits forever.
  std::vector<bool> Wait(const std::vector<ObjectId>& ids, size_t num_ready,
                         std::optional<Clock::time_point> deadline);
  /// Fails every pending entry with `object` (used when the runtime shuts down).
  void FailAllPending(const StoredObject& object);
  size_t size() const;

 private:
  struct Waiter {
    size_t remaining;
    std::condition_variable cv;
  };
  struct Entry {
    int refs = 0;
    std::optional<StoredObject> object;
    std::vector<Waiter*> waiters;
    std::vector<Callback> callbacks;
  };
  void MakeReadyLocked(Entry& e, StoredObject object, std::vector<Callback>* run);

  mutable std::mutex mu_;
  std::unordered_map<ObjectId, Entry> entries_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism

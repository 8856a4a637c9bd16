// The owner's in-process object table: values of small objects, errors, and who waits for them.
#pragma once

#include <absl/container/inlined_vector.h>
#include <absl/container/node_hash_map.h>
#include <prism/ids.h>
#include <prism/internal/runtime_api.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"

namespace prism {

/// A ready object: its encoded value (here, or in the node's object store), or the error that
/// stands in its place.
struct StoredObject {
  std::shared_ptr<const std::string> data;
  rpc::TaskError error;       // kind() != ERROR_NONE for an error
  bool in_store = false;      // the value is in the node's object store (`size` bytes)
  bool actor_handle = false;  // the handle object of an actor this process owns (not detached)
  internal::OwnerAddress device_producer;  // holds device objects kept by this worker (if set)
  uint64_t size = 0;
  /// Refs inside the value: held as long as this object is.
  std::vector<internal::RefPtr> contained;
  bool is_error() const { return error.kind() != rpc::ERROR_NONE; }
  static StoredObject InStore(uint64_t size) {
    StoredObject o;
    o.in_store = true;
    o.size = size;
    return o;
  }
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

/// What an entry was when it went: the caller frees what it stood for elsewhere.
struct FreedObject {
  ObjectId id;
  bool borrowed = false;         // a ref to another process's object
  internal::OwnerAddress owner;  // borrowed: its owner
  uint32_t registered = 0;       // borrowed: registrations at the owner to undo
  bool in_store = false;         // owned: the value is in the node's object store
  bool actor = false;            // owned: an actor's handle object (the actor goes with it)
  internal::OwnerAddress device_producer;  // owned: the worker keeping its device objects
};

/// The process's reference table and object values. An entry lives while local references
/// exist (handles, refs held by submitted tasks and by containing objects: AddRef/RemoveRef)
/// and, for objects this process owns, while other workers borrow it. Thread-safe; callbacks
/// run on the thread that made the object ready, outside the lock.
class MemoryStore {
 public:
  using Callback = std::function<void(const StoredObject&)>;
  using OnFree = std::function<void(FreedObject)>;
  using Clock = std::chrono::steady_clock;

  MemoryStore() = default;
  /// `on_free` runs (outside the lock, on the releasing thread) for every entry that goes.
  explicit MemoryStore(OnFree on_free) : on_free_(std::move(on_free)) {}

  void AddRef(const ObjectId& id);
  /// AddRef if the id has an entry here; false (and nothing done) if not.
  bool AddRefIfPresent(const ObjectId& id);
  /// AddRef, and, when the id had no entry here, make it ready with `if_missing` (one step, so
  /// no release in between can leave an empty pending entry).
  void AddRefOr(const ObjectId& id, const StoredObject& if_missing);
  /// A local reference to another process's object. True when this process was not
  /// registered as its borrower yet: the caller must register it with the owner now (the entry
  /// counts that registration from here on).
  bool AddBorrowedRef(const ObjectId& id, const internal::OwnerAddress& owner);
  /// Someone else registered this process as a borrower `n` times on its behalf.
  void CreditRegistration(const ObjectId& id, uint32_t n);
  /// The owner did not count a registration (the object was gone).
  void UndoRegistration(const ObjectId& id);
  /// Drops one reference; the entry and its value go with the last one (unless borrowers
  /// remain), and callbacks still waiting for it get an object-lost error.
  void RemoveRef(const ObjectId& id);
  /// Owner side: `worker` borrows the object. False when the object is no longer held here.
  bool AddBorrower(const ObjectId& id, const WorkerId& worker, uint32_t n = 1);
  void RemoveBorrower(const ObjectId& id, const WorkerId& worker, uint32_t n);
  /// `worker` died: every borrow it held is released.
  void RemoveBorrowerEverywhere(const WorkerId& worker);
  /// How many workers borrow `id` (tests, stats).
  size_t NumBorrowers(const ObjectId& id) const;
  /// Makes an object ready. Ignored (returns false) when nobody references it any more, or it
  /// is ready already (a stale duplicate).
  bool Put(const ObjectId& id, StoredObject object);
  /// Makes a ready object pending again (its value was lost and is being rebuilt): readers wait
  /// for the new value. False when it is not here or not ready.
  bool Reset(const ObjectId& id);
  std::optional<StoredObject> GetIfReady(const ObjectId& id) const;
  /// Whether the id is referenced here (pending or ready).
  bool Contains(const ObjectId& id) const;
  /// Runs `cb` once the object is ready (now, if it is). Returns false, without running `cb`,
  /// when the id is not referenced here.
  bool OnReady(const ObjectId& id, Callback cb);
  /// Blocks until at least `num_ready` of `ids` are ready or `deadline` passes; returns which
  /// are ready. `deadline` = nullopt waits forever. `values`, if given, gets the value of each
  /// one found ready (what GetIfReady would return, without a second lookup).
  std::vector<bool> Wait(const std::vector<ObjectId>& ids, size_t num_ready,
                         std::optional<Clock::time_point> deadline,
                         std::vector<std::optional<StoredObject>>* values = nullptr);
  /// Fails every pending entry with `object` (used when the runtime shuts down).
  void FailAllPending(const StoredObject& object);
  /// Before any Wait: `poll(false)` runs between the checks of a Wait's spin, on the waiting
  /// thread, and `poll(true)` once after the spin when it ran before (the submitter reads the
  /// thread's own reply there: TaskSubmitter::ReadOwnReply).
  void SetSpinPoll(std::function<void(bool last)> poll) { spin_poll_ = std::move(poll); }
  size_t size() const;

 private:
  AdaptiveSpin spin_;  // how long Wait spins before it sleeps
  std::function<void(bool last)> spin_poll_;
  struct Waiter {
    size_t remaining;
    std::condition_variable cv;
    std::atomic<bool> done{false};  // remaining reached 0 (read without the lock while spinning)
  };
  // What few entries need: kept apart, so that an entry (and the table's node around it) stays
  // a cache line or two. A Get of thousands of refs touches that many entries, and small ones
  // keep the table within the reach of the TLB.
  struct Sharing {
    std::vector<Callback> callbacks;
    std::map<WorkerId, uint32_t> borrowers;  // owned objects: who borrows them
    bool borrowed = false;
    internal::OwnerAddress owner;  // borrowed objects
    uint32_t registered = 0;
  };
  struct Entry {
    int refs = 0;
    std::unique_ptr<StoredObject> object;  // null while pending
    // Inline: a Get of thousands of pending refs adds one waiter to each, which in a vector
    // would cost an allocation each (and a free on another thread).
    absl::InlinedVector<Waiter*, 1> waiters;
    std::unique_ptr<Sharing> sharing;
    Sharing& share() {
      if (!sharing) sharing = std::make_unique<Sharing>();
      return *sharing;
    }
    bool borrowed() const { return sharing && sharing->borrowed; }
    bool has_borrowers() const { return sharing && !sharing->borrowers.empty(); }
    bool has_callbacks() const { return sharing && !sharing->callbacks.empty(); }
  };
  // Abseil's node map: entries keep their addresses (as in std::unordered_map), but a lookup
  // probes a flat array instead of walking bucket lists, one cache miss where std's takes three
  // or four (a burst of thousands of tasks looks each of its objects up several times).
  using Table = absl::node_hash_map<ObjectId, Entry>;
  // What goes when entries go: handled after the lock is released (contained refs release
  // other entries; callbacks and on_free call out). The table's nodes are taken out whole
  // (no copy of an entry), and the usual single one needs no allocation.
  struct Graveyard {
    Table::node_type first;
    std::vector<Table::node_type> more;
    void Add(Table::node_type node) {
      if (first.empty()) {
        first = std::move(node);
      } else {
        more.push_back(std::move(node));
      }
    }
  };
  void MakeReadyLocked(Entry& e, std::unique_ptr<StoredObject> object, std::vector<Callback>* run);
  void MaybeEraseLocked(Table::iterator it, Graveyard* g) PRISM_REQUIRES(mu_);
  void Bury(Graveyard& g);
  void BuryOne(const ObjectId& id, Entry& e);

  OnFree on_free_;
  mutable Mutex mu_;
  Table entries_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism

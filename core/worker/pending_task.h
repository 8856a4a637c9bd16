// A task on its way from the process that submitted it, shared by the task and actor
// submitters: its spec (in an arena of its own), what keeps its arguments alive, what the
// submitters need from the core worker around them, and how a reply becomes the results stored
// for the caller.
#pragma once

#include <prism/internal/runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/ids.h"
#include "prism.pb.h"
#include "rpc/frame.h"
#include "rpc/message_arena.h"
#include "worker/lease_client.h"
#include "worker/memory_store.h"

namespace prism {

struct SubmitterConfig {
  std::string token;
  /// Tasks pushed to one worker before its replies come back, once the node has no free
  /// resources for another lease of the shape. While it has, each lease holds one task and more
  /// leases are asked for, so tasks spread over workers.
  size_t max_tasks_in_flight_per_lease = 64;
  /// An idle lease is kept this long for the next task of its shape before it is returned.
  int lease_idle_ms = 10;
  size_t max_frame_bytes = rpc::kDefaultMaxFrameBytes;
};

/// A task's spec in a protobuf arena of its own. The submitting thread builds it with one
/// allocation (a few dozen otherwise, one per string and sub-message), and the event loop, where
/// the task ends, frees it in one piece (otherwise a few dozen frees of another thread's memory,
/// each a trip into that thread's malloc arena). Copies are deep; a moved-from one is empty.
class ArenaSpec {
 public:
  ArenaSpec();
  ~ArenaSpec();
  ArenaSpec(const ArenaSpec& other);
  ArenaSpec& operator=(const ArenaSpec& other);
  ArenaSpec(ArenaSpec&&) noexcept;
  ArenaSpec& operator=(ArenaSpec&&) noexcept;
  rpc::TaskSpec* operator->() { return spec_; }
  const rpc::TaskSpec* operator->() const { return spec_; }
  rpc::TaskSpec& operator*() { return *spec_; }
  const rpc::TaskSpec& operator*() const { return *spec_; }
  rpc::TaskSpec* get() { return spec_; }

 private:
  std::unique_ptr<rpc::MessageArena> arena_;
  rpc::TaskSpec* spec_ = nullptr;  // on arena_
};

/// Lends a task's spec to the PushTask that carries it for as long as the guard lives (the
/// frame is built meanwhile): no copy of the spec per send. Declared after the envelope, so it
/// takes the spec back before the envelope would free it.
class LentSpec {
 public:
  LentSpec(rpc::PushTask* push, rpc::TaskSpec* spec) : push_(push) {
    push_->unsafe_arena_set_allocated_spec(spec);
  }
  ~LentSpec() { push_->unsafe_arena_release_spec(); }
  LentSpec(const LentSpec&) = delete;
  LentSpec& operator=(const LentSpec&) = delete;

 private:
  rpc::PushTask* push_;
};

/// A task on its way: the spec (args may still be refs), what keeps its arguments alive, and
/// its retry budget.
struct PendingTask {
  ArenaSpec spec;
  std::vector<internal::RefPtr> arg_refs;  // parallel to spec.args(); null for values
  std::vector<internal::RefPtr> nested;    // refs inside argument values
  internal::RefPtr actor_lifetime;  // an actor call's: its actor lives at least until it is done
  ObjectId return_id;
  LeaseSpec lease;  // resources, the worker's environment, placement
  int retries_left = 0;
  // Its arguments are all values and its frame was found to fit when it was submitted (only
  // the attempt number changes after that): the loop need not measure it again.
  bool fits = false;
};

/// Whether a fast lane may send `task` from the submitting thread: its arguments are all values
/// (none waits on the loop to resolve) and its frame fits.
bool FitsTheFastLane(const PendingTask& task, size_t max_frame_bytes);

/// What the submitters need from the core worker around them (a fake in tests).
class SubmitterHost {
 public:
  virtual ~SubmitterHost() = default;
  /// Fetches a borrowed object from its owner; `done` runs on the event loop.
  virtual void FetchBorrowed(const ObjectId& id, const internal::OwnerAddress& owner,
                             MemoryStore::Callback done) = 0;
  virtual bool IsSelf(const internal::OwnerAddress& owner) = 0;
  /// A handle for a ref nested in a task's result (the worker may have registered this process
  /// as its borrower).
  virtual internal::RefPtr NestedRef(const rpc::NestedRef& nested) = 0;
  /// A result that landed in the object store but nobody references any more: free it.
  virtual void DiscardStored(const ObjectId& id) = 0;
  /// Whether the process at `producer` is gone: a task's argument whose device objects a reader
  /// found lost is rebuilt only then.
  virtual bool ProducerGone(const internal::OwnerAddress& producer) = 0;
  /// A result holding device objects kept by `producer` that nobody references any more.
  virtual void DiscardDevice(const ObjectId& id, const internal::OwnerAddress& producer) = 0;
  /// A leased worker released borrows of objects this process owns (sent on the lease
  /// connection, behind the replies that may carry those objects).
  virtual void RemoveBorrowers(const rpc::RemoveBorrowers& released) = 0;
  /// Value `index` (1, 2, ...) of a streaming task arrived (event loop, in order).
  virtual void StreamItem(const TaskId& task, uint64_t index, StoredObject value) = 0;
};

/// The most values one streaming task may write (their object ids stay below the Put ids).
inline constexpr uint64_t kMaxStreamValues = kPutBit - 2;

/// The results a TaskReply carries (value, store location or error), one per return object of
/// a task with `num_returns` (an error: one, for all of them), with handles for the refs inside
/// them, taken before the caller lets go of the task's argument refs.
std::vector<StoredObject> ResultsFromReply(rpc::TaskReply& reply, SubmitterHost& host,
                                           uint32_t num_returns);
/// Frees the copies in the object store of a reply's results that nobody will read.
void DiscardReply(const rpc::TaskReply& reply, SubmitterHost& host, uint32_t num_returns);
/// The same for one returned object.
StoredObject ResultFromReturn(rpc::ReturnObject& ret, SubmitterHost& host);
/// Asks for the value of every ref argument (`arg_refs[i]` non-null): from this process's table,
/// or from the owner; `on_ready(i, object)` runs once for each, on any thread. Returns how many.
size_t ResolveArgRefs(const std::vector<internal::RefPtr>& arg_refs, MemoryStore& store,
                      SubmitterHost& host,
                      const std::function<void(size_t index, const StoredObject&)>& on_ready);
/// Puts a resolved ref argument into the spec: its value, or where it lies in the store.
void SetResolvedArg(rpc::TaskSpec& spec, size_t index, const ObjectId& id, const StoredObject& obj);
/// Stores a finished task's result under `return_id`; a stored result nobody wants is freed.
/// Returns whether it was stored.
bool StoreResult(MemoryStore& store, SubmitterHost& host, const ObjectId& return_id,
                 StoredObject result);
/// Stores the results of a task with more than one return object under return ids 2, 3, ...:
/// `more` (the values after the first), or the first result's error for each.
void StoreMoreResults(MemoryStore& store, SubmitterHost& host, const rpc::TaskSpec& spec,
                      const StoredObject& first, std::vector<StoredObject> more);

}  // namespace prism

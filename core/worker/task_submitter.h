// Sends tasks to leased workers: resolves ref arguments, asks the daemon for leases per resource
// shape, pipelines tasks on each lease, retries after worker deaths, and records results.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <prism/internal/runtime_api.h>
#include <prism/options.h>

#include <algorithm>
#include <asio.hpp>
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/ids.h"
#include "base/mutex.h"
#include "base/resources.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "worker/bookings.h"
#include "worker/lease_client.h"
#include "worker/memory_store.h"
#include "worker/own_reply.h"
#include "worker/pending_task.h"

namespace prism {

class TaskSubmitter {
 public:
  TaskSubmitter(asio::io_context& io, SubmitterConfig config, MemoryStore& store,
                LeaseClient& leases, SubmitterHost& host);
  /// Any thread. The return object must already be referenced in the store.
  void Submit(PendingTask task);
  /// Any thread, while it waits for objects (MemoryStore::Wait's spin): when this thread's last
  /// task went out by the fast lane and its reply has not come yet, reads that lease's
  /// connection itself (Connection::TryReadHere), claiming it meanwhile. A plain reply (one
  /// value, inline, with no refs or device objects in it) is stored from here, the lease goes
  /// back on offer, and the loop books the rest later; anything else goes to the loop, in
  /// order. The round trip then needs neither a hand-off to the loop nor its wake-up (the
  /// mirror of the executor reading its caller's connection). `last`: the spin ended (the
  /// claim goes).
  void ReadOwnReply(bool last);
  /// Fails every task not finished with `error` (the daemon is gone, or shutdown).
  void FailAll(const StoredObject& error);
  RuntimeStats stats() const;
  /// Event loop: cancels a task not finished yet; false if there is none with that id.
  bool Cancel(const TaskId& id, bool force);

  // Lineage: a finished task whose result holds device objects (which live in the worker that
  // made them) is kept, with its argument refs, while the result is referenced, so the result
  // can be rebuilt by running the task again (within its max_retries) when that worker dies.
  /// Event loop: the daemon reported `worker` dead: the results it held are rebuilt.
  void ProducerDied(const WorkerId& worker);
  /// Event loop: the result went; its task is no longer kept.
  void DropLineage(const ObjectId& id);
  /// Event loop: rebuilds `id` if it is a kept result whose device objects were lost (a reader
  /// found its producer gone). True when it is being rebuilt (now or already).
  bool Rebuild(const ObjectId& id);
  /// Results kept for rebuilding (tests).
  size_t lineage_size() const { return lineage_count_.load(); }

 private:
  struct Lease {
    uint64_t id = 0;
    std::vector<rpc::DeviceShareProto> devices;  // sent with each task: its GPU ids
    std::shared_ptr<rpc::Connection> conn;
    // Sent, not answered yet, in the order sent: a worker mostly answers in that order, so the
    // answered one is found at the front.
    std::deque<TaskId> in_flight;
    void Answered(const TaskId& id) {
      if (!in_flight.empty() && in_flight.front() == id) {
        in_flight.pop_front();
        return;
      }
      auto it = std::find(in_flight.begin(), in_flight.end(), id);
      if (it != in_flight.end()) in_flight.erase(it);
    }
    std::unique_ptr<asio::steady_timer> idle_timer;
    bool timer_armed = false;
    std::chrono::steady_clock::time_point idle_since;  // when in_flight last became empty
  };
  struct ShapeQueue {
    LeaseSpec spec;
    bool has_spec = false;
    std::deque<TaskId> queue;
    std::map<uint64_t, std::unique_ptr<Lease>> leases;
    uint64_t lease_request = 0;  // the id of the request in flight, 0 when none
    bool saturated = false;      // the daemon queued our last request: pipeline deeper
    int connect_failures = 0;    // consecutive leased workers we could not reach
    int connecting = 0;          // granted leases whose worker we are connecting to
    bool warned_infeasible = false;
  };
  struct Running {
    explicit Running(PendingTask t) : task(std::move(t)) {}
    PendingTask task;
    std::string key;
    uint64_t lease_id = 0;  // 0 while queued
    size_t unresolved = 0;
    bool cancelled = false;        // running when cancelled: its result is dropped
    uint64_t stream_received = 0;  // streaming: values delivered so far (over all attempts)
    std::vector<std::pair<int, rpc::TaskArg>> ref_args;  // the ref arguments as submitted
    int lost_arg_runs = 3;  // runs again after an argument's device objects were found lost
    uint64_t resolve_round =
        0;  // argument callbacks of an earlier round (before a rerun) are stale
    // Per argument: the worker holding the device objects of the value resolved for this run.
    std::vector<std::string> arg_producers;
  };
  // The task as submitted (ref arguments unresolved), to run it again.
  static PendingTask AsSubmitted(const Running& r);
  // Rebuilds kept result `id` if its value holds device objects of `dead` (any producer when
  // empty); the task is queued on `rerun` (the caller adds them once every lost result is
  // pending, so no rerun reads another's stale value).
  bool RebuildInto(const ObjectId& id, const std::string& dead, std::vector<PendingTask>* rerun);

  /// `sent_on`: the lease the fast lane already sent it on (0: none).
  void AddOnLoop(PendingTask task, const std::string& key, uint64_t sent_on);
  // The fast lane (see Submit): the loop offers one idle lease per shape to submitting
  // threads, and takes the offer back before it uses or returns the lease.
  void PublishIdleLease(const std::string& key, const Lease& lease);
  /// Takes the lease off offer; false when the fast lane sent tasks on it that the loop has not
  /// booked yet (so it is not idle).
  bool TakeBackIdle(const std::string& key, uint64_t lease_id);
  void ResolveArgs(const TaskId& id);
  void ResolveArgs(const TaskId& id, Running& r);
  void OnArgReady(const TaskId& id, uint64_t round, size_t index, const StoredObject& obj);
  void Enqueue(const TaskId& id, Running& r);
  void Pump(const std::string& key);
  void OnLeaseOutcome(const std::string& key, uint64_t request_id, const LeaseOutcome& outcome);
  void OnWorkerConnected(const std::string& key, const LeaseOutcome& outcome,
                         Result<rpc::Connected> connected);
  void OnTaskReply(const std::string& key, uint64_t lease_id, rpc::TaskReply& reply);
  void OnStreamItem(uint64_t lease_id, rpc::StreamItem& item);
  void OnWorkerLost(const std::string& key, uint64_t lease_id, const Status& why);
  void ArmIdleTimer(const std::string& key, Lease& lease);
  void StartIdleTimer(const std::string& key,
                      Lease& lease);  // fires lease_idle_ms after idle_since
  /// `more`: the results after the first, for a task with num_returns > 1 that succeeded.
  void Finish(const TaskId& id, StoredObject result, std::vector<StoredObject> more = {});
  // Open addressing, by pointer: a burst of thousands of tasks looks each up several times, and
  // a lookup in a node-based table costs three or four cache misses (400-800 ns on a VM, where
  // a TLB miss walks two page tables), in this one about one (~90 ns).
  using Tasks = absl::flat_hash_map<TaskId, std::unique_ptr<Running>>;
  /// Returns the finished task, out of the table and without its refs, for the caller to drop
  /// when its more urgent work is done (null when it runs again instead).
  std::unique_ptr<Running> Finish(Tasks::iterator it, StoredObject result,
                                  std::vector<StoredObject> more);

  asio::io_context& io_;
  SubmitterConfig config_;
  MemoryStore& store_;
  LeaseClient& leases_;
  SubmitterHost& host_;

  struct FastLane {
    std::shared_ptr<rpc::Connection> conn;  // an idle lease's connection on offer, or null
    uint64_t lease_id = 0;
    std::vector<rpc::DeviceShareProto> devices;
    std::map<uint64_t, int> unbooked;  // per lease: tasks sent but not yet booked by the loop
  };
  // A task the fast lane sent, for the loop to book.
  struct Booking {
    PendingTask task;
    std::string key;
    uint64_t lease_id = 0;
  };
  // A reply its submitting thread took and stored (ReadOwnReply), for the loop to book.
  struct TakenReply {
    TaskId task;
    uint64_t attempt = 0;
    uint64_t lease_id = 0;
  };
  // The reply to the task this thread sent last by the fast lane, and its lease.
  struct OwnTask {
    OwnReply reply;
    FastLane* lane = nullptr;  // (lanes_ never drops an entry)
    uint64_t lease_id = 0;
  };
  static thread_local OwnTask own_;
  /// ReadOwnReply's TryReadHere `take`: true when `msg` was this thread's plain reply.
  bool TakeOwnReply(rpc::Connection& conn, rpc::Envelope& msg);
  /// Loop: books a reply a submitting thread took: the task is done (its result stored).
  void BookTakenReply(const TakenReply& taken);
  /// Loop: books what the fast lane sent, and the replies submitting threads took. Every loop
  /// entry point calls it first, so the loop never looks at tasks or leases without them.
  void DrainBookings();
  Mutex lanes_mu_;
  std::unordered_map<std::string, FastLane> lanes_ PRISM_GUARDED_BY(lanes_mu_);
  Bookings<Booking> bookings_;  // Add under lanes_mu_
  bool drain_posted_ PRISM_GUARDED_BY(lanes_mu_) =
      false;  // a DrainBookings is on its way to the loop
  std::vector<TakenReply> taken_ PRISM_GUARDED_BY(lanes_mu_);
  TakenRepliesDrain taken_drain_{io_, lanes_mu_, [this] { DrainBookings(); }};
  std::atomic<bool> taken_flagged_{false};  // taken_ is not empty
  std::vector<TakenReply> taken_spare_;     // event loop only (keeps its capacity)

  // Event-loop thread only.
  Tasks tasks_;
  std::unordered_map<std::string, ShapeQueue> shapes_;
  bool failed_all_ = false;  // FailAll ran: late connections are given back
  StoredObject fail_error_;  // what FailAll failed tasks with (and fails later ones with)
  std::unordered_map<ObjectId, PendingTask> lineage_;  // kept results' tasks, as submitted
  std::atomic<size_t> lineage_count_{0};

  std::atomic<uint64_t> tasks_submitted_{0}, tasks_retried_{0}, leases_requested_{0},
      leases_granted_{0}, leases_returned_{0};
};

}  // namespace prism

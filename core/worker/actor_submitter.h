// Sends calls to actors: one connection per actor this process calls, calls sent in the order
// they were made (sequence numbers), held while the actor is pending or restarting, resent after
// a restart when they have retries left, failed with the actor's death otherwise.
//
// The fast lane: while an actor is alive, connected and nothing of its waits on the event loop,
// a call whose arguments are all values goes to the actor from the calling thread (its
// sequence number is taken and the frame queued under one lock, so calls reach the actor in
// order); the loop books it as in flight the next time it runs (every entry point drains the
// bookings first). A call that must wait (a ref argument) closes the lane until the loop has
// sent it and everything before it.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "worker/bookings.h"
#include "worker/lease_client.h"
#include "worker/memory_store.h"
#include "worker/own_reply.h"
#include "worker/pending_task.h"

namespace prism {

class ActorSubmitter {
 public:
  ActorSubmitter(asio::io_context& io, SubmitterConfig config, MemoryStore& store,
                 DaemonClient& daemon, SubmitterHost& host);
  /// Any thread. The task's return object must already be referenced in the store.
  void Submit(const ActorId& actor, PendingTask task);
  /// Event loop: what the daemon says about an actor.
  void OnUpdate(const rpc::ActorUpdate& update);
  /// Runs (on the event loop) when an actor is known to be dead.
  std::function<void(const ActorId&)> on_dead;
  /// Event loop: cancels a call: one not sent yet is dropped, a running one's result is.
  void Cancel(const TaskId& id);
  /// Event loop: fails every call not finished (shutdown, daemon gone).
  void FailAll(const StoredObject& error);
  /// Any thread, while it waits for objects: as TaskSubmitter::ReadOwnReply, for the call this
  /// thread sent last by the fast lane while the actor had no other call of this process's out.
  void ReadOwnReply(bool last);

 private:
  struct Call {
    PendingTask task;
    size_t unresolved = 0;
    int retries_used = 0;
    bool cancelled = false;
  };
  struct Actor {
    rpc::ActorState state = rpc::ACTOR_PENDING;
    bool known = false;  // an update has arrived
    bool known_state = false;
    uint32_t conn_incarnation = 0;
    std::string name;
    std::string death_cause;
    int max_task_retries = 0;
    rpc::Address address;
    uint32_t incarnation = 0;
    bool have_lost = false;  // a connection to some incarnation broke
    uint32_t lost_incarnation = 0;
    std::shared_ptr<rpc::Connection> conn;
    bool connecting = false;
    bool subscribed = false;
    std::map<uint64_t, Call> queued;    // not sent yet, by sequence
    std::map<uint64_t, Call> inflight;  // sent, by sequence
    // Calls that were running when the connection broke and have no retries left: they fail
    // once the daemon says what happened (dead, and why; or restarted).
    std::map<uint64_t, Call> orphaned;
    std::string orphaned_why;
  };
  void FailOrphaned(const ActorId& id, Actor& a);

  // The fast lane of one actor (see the top of this file).
  struct Lane {
    uint64_t next_seq = 1;
    std::shared_ptr<rpc::Connection> conn;  // set while calls may go straight to the actor
    size_t posted = 0;                      // calls handed to the loop, not yet added there
    // Calls sent and not answered yet, as the loop last counted them (plus the lane's since):
    // with some out, the lane queues its frames for the loop to write in batches.
    size_t unanswered = 0;
  };
  struct Booking {
    ActorId actor;
    uint64_t seq;
    PendingTask task;
  };
  // A reply its calling thread took and stored (ReadOwnReply), for the loop to book.
  struct TakenCall {
    ActorId actor;
    uint64_t seq = 0;
    TaskId task;
    uint64_t attempt = 0;
  };
  // The reply to the call this thread sent last by the fast lane, and where the call is.
  struct OwnCall {
    OwnReply reply;
    ActorId actor;
    uint64_t seq = 0;
  };
  static thread_local OwnCall own_;
  /// ReadOwnReply's TryReadHere `take`: true when `msg` was this thread's plain reply.
  bool TakeOwnReply(rpc::Envelope& msg);
  /// Event loop: moves the calls the fast lane sent into their actors' `inflight`, and drops
  /// the ones whose replies their calling threads took (their results are stored).
  void DrainBookings();
  /// Event loop: opens the lane when nothing of the actor waits here; closes it otherwise.
  void UpdateLane(const ActorId& id, const Actor& a);
  void CloseLane(const ActorId& id);

  void AddOnLoop(const ActorId& actor, uint64_t seq, PendingTask task);
  /// `calls[seq]` holding `task`.
  static Call& Place(std::map<uint64_t, Call>& calls, uint64_t seq, PendingTask task);
  void OnArgReady(const ActorId& actor, uint64_t seq, size_t index, const StoredObject& obj);
  void Pump(const ActorId& actor);
  void Connect(const ActorId& actor);
  void OnReply(const ActorId& actor, uint32_t incarnation, rpc::TaskReply& reply);
  void OnDisconnected(const ActorId& actor, uint32_t incarnation, const Status& why);
  void Finish(Call& call, StoredObject result, std::vector<StoredObject> more = {});
  StoredObject DiedError(const ActorId& id, const Actor& a, const std::string& what) const;

  asio::io_context& io_;
  SubmitterConfig config_;
  MemoryStore& store_;
  DaemonClient& daemon_;
  SubmitterHost& host_;
  std::unordered_map<ActorId, Actor> actors_;  // event loop only
  bool failed_all_ = false;
  Mutex lanes_mu_;
  std::unordered_map<ActorId, Lane> lanes_ PRISM_GUARDED_BY(lanes_mu_);
  Bookings<Booking> bookings_;  // Add and Flag under lanes_mu_
  std::vector<TakenCall> taken_ PRISM_GUARDED_BY(lanes_mu_);
  TakenRepliesDrain taken_drain_{io_, lanes_mu_, [this] { DrainBookings(); }};
  std::atomic<bool> taken_flagged_{false};  // taken_ is not empty
};

}  // namespace prism

#include "worker/actor_submitter.h"

#include "base/logging.h"
#include "base/mutex.h"

namespace prism {

ActorSubmitter::Call& ActorSubmitter::Place(std::map<uint64_t, Call>& calls, uint64_t seq,
                                            PendingTask task) {
  // Made from the task: a Call made empty would make an empty spec (an arena) only to drop it.
  auto it = calls.find(seq);
  if (it == calls.end()) return calls.emplace(seq, Call{std::move(task)}).first->second;
  it->second.task = std::move(task);
  return it->second;
}

ActorSubmitter::ActorSubmitter(asio::io_context& io, SubmitterConfig config, MemoryStore& store,
                               DaemonClient& daemon, SubmitterHost& host)
    : io_(io), config_(std::move(config)), store_(store), daemon_(daemon), host_(host) {}

void ActorSubmitter::Submit(const ActorId& actor, PendingTask task) {
  const bool eligible = FitsTheFastLane(task, config_.max_frame_bytes);
  UniqueLock lock(lanes_mu_);
  Lane& lane = lanes_[actor];
  const uint64_t seq = lane.next_seq++;
  task.spec->set_sequence(seq);
  if (eligible && lane.conn && !lane.conn->closed()) {
    {
      rpc::Envelope env;
      env.mutable_push_task()->set_lease_id(0);
      LentSpec lent(env.mutable_push_task(), task.spec.get());  // (not copied)
      // Flagged before the frame leaves: the loop, handling the reply, then waits on lanes_mu_
      // for the booking instead of missing it.
      bookings_.Flag();
      // Under lanes_mu_, so frames go out in sequence order. A caller waiting for each answer
      // writes its frame itself (no hand-off to the loop); one with calls out already (a
      // pipeline) lets the loop write them in batches, as a peer woken per frame costs more.
      if (lane.unanswered++ == 0) {
        lane.conn->Send(env);
        // Alone on the connection: its reply is the next frame, which this thread may read
        // itself when it waits (ReadOwnReply), if the loop need not look at it.
        if (task.spec->num_returns() <= 1 && task.nested.empty()) {
          own_.reply.Sent(this, lane.conn, TaskId::FromBinary(task.spec->task_id()),
                          task.spec->attempt(), task.return_id);
          own_.actor = actor;
          own_.seq = seq;
        } else {
          own_.reply.Forget();
        }
      } else {
        lane.conn->SendBatched(env);
        own_.reply.Forget();
      }
    }
    bookings_.Add(Booking{actor, seq, std::move(task)});
    return;
  }
  // Calls after this one wait for it: they go by the loop too until it has sent them all.
  lane.conn = nullptr;
  lane.posted++;
  lock.unlock();
  asio::post(io_, [this, actor, seq, t = std::move(task)]() mutable {
    DrainBookings();
    AddOnLoop(actor, seq, std::move(t));
  });
}

thread_local ActorSubmitter::OwnCall ActorSubmitter::own_;

void ActorSubmitter::ReadOwnReply(bool last) {
  own_.reply.Read(this, last,
                  [this](rpc::Connection&, rpc::Envelope& m) { return TakeOwnReply(m); });
}

bool ActorSubmitter::TakeOwnReply(rpc::Envelope& msg) {
  std::string value;
  if (!own_.reply.TakePlain(msg, &value)) return false;
  // Copied first: storing the value runs callbacks on this thread, which might call again.
  const TakenCall taken{own_.actor, own_.seq, own_.reply.task(), own_.reply.attempt()};
  (void)store_.Put(own_.reply.return_id(),
                   StoredObject::Value(std::move(value)));  // (the first result wins)
  bool start = false;
  {
    MutexLock lock(lanes_mu_);
    taken_.push_back(taken);
    taken_flagged_.store(true, std::memory_order_release);
    // Answered: this thread's next call goes out from here too, written at once.
    auto it = lanes_.find(taken.actor);
    if (it != lanes_.end() && it->second.unanswered > 0) it->second.unanswered--;
    start = taken_drain_.Note();
  }
  if (start) taken_drain_.Start();
  return true;
}

void ActorSubmitter::DrainBookings() {
  // The taken replies are swapped out before the bookings: a reply was taken after its call was
  // booked for the loop, so every call answered here is booked first.
  std::vector<TakenCall> taken;
  if (taken_flagged_.load(std::memory_order_acquire)) {
    MutexLock lock(lanes_mu_);
    taken.swap(taken_);
    taken_flagged_.store(false, std::memory_order_relaxed);
  }
  bookings_.Drain(lanes_mu_, [this](Booking& b) {
    Place(actors_[b.actor].inflight, b.seq, std::move(b.task));
  });
  for (const TakenCall& t : taken) {
    auto ait = actors_.find(t.actor);
    if (ait == actors_.end()) continue;
    auto it = ait->second.inflight.find(t.seq);
    // Not there, or another attempt: it was retried or failed meanwhile (its result stands).
    if (it == ait->second.inflight.end() || it->second.task.spec->attempt() != t.attempt ||
        TaskId::FromBinary(it->second.task.spec->task_id()) != t.task) {
      continue;
    }
    it->second.task.arg_refs.clear();  // as Finish, with the result stored already
    it->second.task.nested.clear();
    it->second.task.actor_lifetime.reset();
    ait->second.inflight.erase(it);
  }
}

void ActorSubmitter::UpdateLane(const ActorId& id, const Actor& a) {
  const bool open = !failed_all_ && a.state == rpc::ACTOR_ALIVE && a.conn && !a.conn->closed() &&
                    a.conn_incarnation == a.incarnation && a.queued.empty();
  MutexLock lock(lanes_mu_);
  Lane& lane = lanes_[id];
  lane.conn = open && lane.posted == 0 ? a.conn : nullptr;
  lane.unanswered = a.inflight.size();
}

void ActorSubmitter::CloseLane(const ActorId& id) {
  MutexLock lock(lanes_mu_);
  auto it = lanes_.find(id);
  if (it != lanes_.end()) it->second.conn = nullptr;
}

StoredObject ActorSubmitter::DiedError(const ActorId& id, const Actor& a,
                                       const std::string& what) const {
  std::string who =
      a.name.empty() ? "actor " + id.Hex() : "actor '" + a.name + "' (" + id.Hex() + ")";
  return StoredObject::Error(rpc::ERROR_ACTOR_DIED, who + " " + what);
}

void ActorSubmitter::AddOnLoop(const ActorId& id, uint64_t seq, PendingTask task) {
  {
    MutexLock lock(lanes_mu_);
    lanes_[id].posted--;
  }
  Actor& a = actors_[id];
  if (!a.subscribed) {
    a.subscribed = true;
    if (!a.known) {
      rpc::Envelope sub;
      sub.mutable_subscribe_actor()->set_actor_id(id.Binary());
      // The actor's record is at its creator's node (the owner of its handles' lifetime ref):
      // another node's daemon is asked through the relay.
      rpc::Address home;
      if (task.actor_lifetime) {
        const internal::OwnerAddress& owner = task.actor_lifetime->owner();
        home.set_node_id(owner.node_id);
        home.set_node_address(owner.node_address);
        home.set_socket_path("daemon.sock");
      }
      if (!home.node_address().empty() && rpc::IsRemote(home)) {
        daemon_.SendToNode(home, sub);
      } else {
        daemon_.Send(sub);
      }
    }
  }
  Call& call = Place(a.queued, seq, std::move(task));
  if (failed_all_ || a.state == rpc::ACTOR_DEAD) {
    Finish(call, failed_all_ ? StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down")
                             : DiedError(id, a, "is dead: " + a.death_cause));
    a.queued.erase(seq);
    UpdateLane(id, a);
    return;
  }
  call.unresolved = ResolveArgRefs(
      call.task.arg_refs, store_, host_, [this, id, seq](size_t i, const StoredObject& obj) {
        asio::post(io_, [this, id, seq, i, obj] { OnArgReady(id, seq, i, obj); });
      });
  Pump(id);
}

void ActorSubmitter::OnArgReady(const ActorId& id, uint64_t seq, size_t index,
                                const StoredObject& obj) {
  DrainBookings();
  auto ait = actors_.find(id);
  if (ait == actors_.end()) return;
  auto cit = ait->second.queued.find(seq);
  if (cit == ait->second.queued.end()) return;
  Call& call = cit->second;
  if (obj.is_error()) {
    Finish(call, obj);
    ait->second.queued.erase(cit);
    Pump(id);
    return;
  }
  SetResolvedArg(*call.task.spec, index, call.task.arg_refs[index]->id(), obj);
  if (call.unresolved > 0) call.unresolved--;
  Pump(id);
}

void ActorSubmitter::Pump(const ActorId& id) {
  Actor& a = actors_[id];
  if (a.state != rpc::ACTOR_ALIVE) {
    CloseLane(id);
    return;
  }
  if (!a.conn) {
    CloseLane(id);
    // Not again to an incarnation whose connection broke: wait for the next one.
    if (!a.connecting && !(a.have_lost && a.lost_incarnation >= a.incarnation)) Connect(id);
    return;
  }
  // In order: the first call that is still resolving holds back the ones after it.
  while (!a.queued.empty() && a.queued.begin()->second.unresolved == 0) {
    auto node = a.queued.extract(a.queued.begin());
    Call& call = node.mapped();
    {
      rpc::Envelope env;
      env.mutable_push_task()->set_lease_id(0);
      LentSpec lent(env.mutable_push_task(), call.task.spec.get());  // (not copied)
      a.conn->Send(env);
    }
    a.inflight.insert(std::move(node));
  }
  UpdateLane(id, a);
}

void ActorSubmitter::Connect(const ActorId& id) {
  Actor& a = actors_[id];
  a.connecting = true;
  rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_CLIENT, config_.token);
  hello.mutable_hello()->set_expect_worker_id(a.address.worker_id());
  uint32_t inc = a.incarnation;
  rpc::AsyncConnectAndHello(
      io_, a.address, hello, std::chrono::seconds(10),
      [this, id, inc](Result<rpc::Connected> connected) {
        DrainBookings();
        Actor& a = actors_[id];
        a.connecting = false;
        if (failed_all_) return;
        if (!connected.ok()) {
          PRISM_LOG_WARN("cannot reach actor {}: {}", id.Hex(), connected.status().ToString());
          // The daemon's next update says whether it died; if it stays alive (a slow
          // handshake), try again in a while.
          auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(500));
          timer->async_wait([this, id, inc, timer](const asio::error_code& ec) {
            if (ec || failed_all_) return;
            DrainBookings();
            Actor& again = actors_[id];
            if (again.state == rpc::ACTOR_ALIVE && again.incarnation == inc && !again.conn)
              Pump(id);
          });
          return;
        }
        if (inc != a.incarnation) return;  // a newer incarnation meanwhile: connect to that
        a.conn = rpc::Connection::Create(std::move(connected->socket), config_.max_frame_bytes);
        a.conn->ShareReads();  // a calling thread may read its own reply (ReadOwnReply)
        a.conn_incarnation = inc;
        a.conn->Start(
            [this, id, inc](rpc::Connection& c, rpc::Envelope& msg) {
              if (msg.has_task_reply()) {
                OnReply(id, inc, *msg.mutable_task_reply());
              } else if (msg.has_remove_borrowers()) {
                host_.RemoveBorrowers(msg.remove_borrowers());
              } else {
                c.Close(Status::ProtocolError("unexpected message from an actor"));
              }
            },
            [this, id, inc](rpc::Connection&, const Status& st) { OnDisconnected(id, inc, st); },
            std::move(connected->leftover));
        Pump(id);
      });
}

void ActorSubmitter::OnReply(const ActorId& id, uint32_t incarnation, rpc::TaskReply& reply) {
  DrainBookings();
  Actor& a = actors_[id];
  uint64_t seq = 0;
  // Calls run in order, so a reply is nearly always the oldest call's: look there first, not
  // through every call in flight (a thousand pipelined calls made that quadratic).
  if (!a.inflight.empty() && a.inflight.begin()->second.task.spec->task_id() == reply.task_id()) {
    seq = a.inflight.begin()->first;
  } else {
    for (auto& [s, call] : a.inflight) {
      if (call.task.spec->task_id() == reply.task_id()) {
        seq = s;
        break;
      }
    }
  }
  auto it = a.inflight.find(seq);
  if (seq == 0 || it == a.inflight.end() || it->second.task.spec->attempt() != reply.attempt())
    return;
  if (it->second.cancelled) {
    DiscardReply(reply, host_, it->second.task.spec->num_returns());
    Finish(it->second,
           StoredObject::Error(rpc::ERROR_CANCELLED,
                               "call " + it->second.task.spec->name() + " was cancelled"));
  } else {
    std::vector<StoredObject> results =
        ResultsFromReply(reply, host_, it->second.task.spec->num_returns());
    StoredObject first = std::move(results.front());
    results.erase(results.begin());
    Finish(it->second, std::move(first), std::move(results));
  }
  a.inflight.erase(it);
  MutexLock lock(lanes_mu_);
  lanes_[id].unanswered = a.inflight.size();  // (a count the lane raced with only batches less)
}

void ActorSubmitter::OnDisconnected(const ActorId& id, uint32_t incarnation, const Status& why) {
  // The lane closes first: a call the fast lane sent on this connection is booked by then, so it
  // is among those running below (retried or failed with them).
  CloseLane(id);
  DrainBookings();
  Actor& a = actors_[id];
  a.conn.reset();
  a.have_lost = true;
  a.lost_incarnation = std::max(a.lost_incarnation, incarnation);
  // Calls that were running: again after the restart if they have retries left.
  auto inflight = std::move(a.inflight);
  a.inflight.clear();
  for (auto& [seq, call] : inflight) {
    bool retry = !failed_all_ && (a.max_task_retries < 0 || call.retries_used < a.max_task_retries);
    if (retry) {
      call.retries_used++;
      call.task.spec->set_attempt(call.task.spec->attempt() + 1);
      a.queued.emplace(seq, std::move(call));
    } else {
      a.orphaned.emplace(seq, std::move(call));
    }
  }
  a.orphaned_why = why.message();
  if (a.state == rpc::ACTOR_DEAD || failed_all_) FailOrphaned(id, a);
  if (a.state == rpc::ACTOR_DEAD) {
    auto queued = std::move(a.queued);
    a.queued.clear();
    for (auto& [seq, call] : queued) Finish(call, DiedError(id, a, "is dead: " + a.death_cause));
  }
  Pump(id);
}

void ActorSubmitter::OnUpdate(const rpc::ActorUpdate& u) {
  if (!ActorId::IsValidBinary(u.actor_id())) return;
  ActorId id = ActorId::FromBinary(u.actor_id());
  DrainBookings();
  Actor& a = actors_[id];
  a.known = true;
  a.name = u.name();
  a.max_task_retries = u.max_task_retries();
  if (a.state == rpc::ACTOR_DEAD) return;
  // Older news (answers to requests arrive here after the updates sent meanwhile): an older
  // incarnation, or an earlier state of the same one.
  auto rank = [](rpc::ActorState st) {
    return st == rpc::ACTOR_ALIVE ? 1 : st == rpc::ACTOR_DEAD ? 2 : 0;
  };
  if (u.num_restarts() < a.incarnation) return;
  if (a.known_state && u.num_restarts() == a.incarnation && rank(u.state()) < rank(a.state)) return;
  a.known_state = true;
  if (u.num_restarts() > a.incarnation && a.conn && a.conn_incarnation < u.num_restarts()) {
    a.conn->Close(Status::Unavailable("the actor restarted"));  // its calls retry or fail
  }
  a.state = u.state();
  if (u.state() == rpc::ACTOR_DEAD) a.death_cause = u.death_cause();
  if (u.state() == rpc::ACTOR_DEAD || u.num_restarts() > a.incarnation) FailOrphaned(id, a);
  a.incarnation = u.num_restarts();
  if (u.state() == rpc::ACTOR_ALIVE) {
    a.address = u.address();
    Pump(id);
    return;
  }
  CloseLane(id);  // not alive now (Pump above reopens it for an alive one)
  if (u.state() == rpc::ACTOR_DEAD) {
    a.death_cause = u.death_cause();
    if (on_dead) on_dead(id);
    auto queued = std::move(a.queued);
    a.queued.clear();
    for (auto& [seq, call] : queued) Finish(call, DiedError(id, a, "is dead: " + a.death_cause));
    if (a.conn) a.conn->Close(Status::Cancelled("the actor is dead"));
  }
}

void ActorSubmitter::FailOrphaned(const ActorId& id, Actor& a) {
  auto orphaned = std::move(a.orphaned);
  a.orphaned.clear();
  for (auto& [seq, call] : orphaned) {
    std::string what = "died while running " + call.task.spec->name() + " (" + a.orphaned_why + ")";
    if (a.state == rpc::ACTOR_DEAD) {
      what += ": " + a.death_cause;
    } else {
      what += " and was restarted; the call may have run, and has no retries left";
    }
    Finish(call, DiedError(id, a, what));
  }
}

void ActorSubmitter::Finish(Call& call, StoredObject result, std::vector<StoredObject> more) {
  ObjectId rid = call.task.return_id;
  call.task.arg_refs.clear();  // the refs go with the call
  call.task.nested.clear();
  call.task.actor_lifetime.reset();
  StoreMoreResults(store_, host_, *call.task.spec, result, std::move(more));
  StoreResult(store_, host_, rid, std::move(result));
}

void ActorSubmitter::Cancel(const TaskId& id) {
  DrainBookings();
  for (auto& [aid, a] : actors_) {
    for (auto* calls : {&a.queued, &a.orphaned}) {
      for (auto it = calls->begin(); it != calls->end(); ++it) {
        if (it->second.task.spec->task_id() != id.Binary()) continue;
        Finish(it->second,
               StoredObject::Error(rpc::ERROR_CANCELLED,
                                   "call " + it->second.task.spec->name() + " was cancelled"));
        calls->erase(it);
        Pump(aid);
        return;
      }
    }
    for (auto& [seq, call] : a.inflight) {
      if (call.task.spec->task_id() == id.Binary()) {
        call.cancelled = true;
        if (a.conn) {  // the actor may stop it (an async method)
          rpc::Envelope env;
          env.mutable_cancel_call()->set_task_id(id.Binary());
          a.conn->Send(env);
        }
        return;
      }
    }
  }
}

void ActorSubmitter::FailAll(const StoredObject& error) {
  failed_all_ = true;
  {
    MutexLock lock(lanes_mu_);
    for (auto& [id, lane] : lanes_) lane.conn = nullptr;
  }
  DrainBookings();
  for (auto& [id, a] : actors_) {
    auto queued = std::move(a.queued);
    auto inflight = std::move(a.inflight);
    auto orphaned = std::move(a.orphaned);
    a.queued.clear();
    a.inflight.clear();
    a.orphaned.clear();
    for (auto& [seq, call] : queued) Finish(call, error);
    for (auto& [seq, call] : inflight) Finish(call, error);
    for (auto& [seq, call] : orphaned) Finish(call, error);
    if (a.conn) a.conn->Close(Status::Cancelled("shutting down"));
  }
}

}  // namespace prism

#include "worker/task_submitter.h"

#include <algorithm>

#include "base/ids.h"
#include "base/logging.h"
#include "base/mutex.h"
#include "rpc/blocking_client.h"

namespace prism {

TaskSubmitter::TaskSubmitter(asio::io_context& io, SubmitterConfig config, MemoryStore& store,
                             LeaseClient& leases, SubmitterHost& host)
    : io_(io), config_(std::move(config)), store_(store), leases_(leases), host_(host) {}

RuntimeStats TaskSubmitter::stats() const {
  RuntimeStats s;
  s.tasks_submitted = tasks_submitted_.load();
  s.tasks_retried = tasks_retried_.load();
  s.leases_requested = leases_requested_.load();
  s.leases_granted = leases_granted_.load();
  s.leases_returned = leases_returned_.load();
  return s;
}

void TaskSubmitter::Submit(PendingTask task) {
  tasks_submitted_++;
  // The fast lane: a task whose arguments are all values, for a shape with an idle lease, goes
  // to its worker from this thread; the loop books it afterwards. It saves the round trip's
  // hand-off to the event loop (a wake-up that costs as much as the socket's own on a VM).
  std::string key = task.lease.Key();
  std::shared_ptr<rpc::Connection> conn;
  std::string frame;
  bool own = false;  // its reply may be read here (the task goes to the loop's books first)
  TaskId own_task;
  uint64_t own_attempt = 0;
  const ObjectId own_return = task.return_id;
  task.fits = FitsTheFastLane(task, config_.max_frame_bytes);
  const bool eligible = !task.spec->streaming() && task.fits;
  bool post = false;
  {
    MutexLock lock(lanes_mu_);
    auto it = eligible ? lanes_.find(key) : lanes_.end();
    if (it != lanes_.end() && it->second.conn && !it->second.conn->closed()) {
      FastLane& lane = it->second;
      conn = std::move(lane.conn);
      lane.conn = nullptr;
      const uint64_t lease_id = lane.lease_id;
      lane.unbooked[lease_id]++;
      rpc::Envelope env;
      auto* push = env.mutable_push_task();
      push->set_lease_id(lease_id);
      push->mutable_devices()->Assign(lane.devices.begin(), lane.devices.end());
      {
        // The frame is built here, before the booking hands the task to the loop.
        LentSpec lent(push, task.spec.get());
        rpc::AppendFrame(env, &frame);
      }
      // Its reply may be read by this thread when it waits (ReadOwnReply).
      own_.reply.Forget();
      own = task.spec->num_returns() <= 1 && task.nested.empty();
      if (own) {
        own_.lane = &lane;
        own_.lease_id = lease_id;
        own_task = TaskId::FromBinary(task.spec->task_id());
        own_attempt = task.spec->attempt();
      }
      // Booked by the loop the next time it looks at tasks (every entry point drains these
      // first), so the loop is not woken for it: its reply, or the lease's loss, comes later.
      bookings_.Add(Booking{std::move(task), std::move(key), lease_id});
    } else {
      // For the loop to add, in order with the lane's bookings. One wake-up of the loop takes
      // all that came meanwhile: a burst of submissions costs the loop one hand-off, not one each.
      bookings_.Add(Booking{std::move(task), std::move(key), 0});
      post = !drain_posted_;
      drain_posted_ = true;
    }
  }
  if (post) PostDrain(io_, lanes_mu_, &drain_posted_, [this] { DrainBookings(); });
  if (conn) {
    conn->SendFrame(frame);
    if (own) own_.reply.Sent(this, conn, own_task, own_attempt, own_return);
  }
}

thread_local TaskSubmitter::OwnTask TaskSubmitter::own_;

void TaskSubmitter::ReadOwnReply(bool last) {
  own_.reply.Read(this, last,
                  [this](rpc::Connection& c, rpc::Envelope& m) { return TakeOwnReply(c, m); });
}

bool TaskSubmitter::TakeOwnReply(rpc::Connection& conn, rpc::Envelope& msg) {
  std::string value;
  if (!own_.reply.TakePlain(msg, &value)) return false;
  // Copied first: storing the value runs callbacks on this thread, which might submit again.
  const TakenReply taken{own_.reply.task(), own_.reply.attempt(), own_.lease_id};
  FastLane* lane = own_.lane;
  // The first result stored wins: a task the loop finished meanwhile (cancelled with force, or
  // failed at shutdown) keeps what it was given.
  (void)store_.Put(own_.reply.return_id(), StoredObject::Value(std::move(value)));
  bool start = false;
  {
    MutexLock lock(lanes_mu_);
    taken_.push_back(taken);
    taken_flagged_.store(true, std::memory_order_release);
    // The lease is idle again, unless the loop put others on it meanwhile: back on offer for
    // this thread's next task (the loop offers it again anyway when it books this reply).
    if (!lane->conn && lane->lease_id == taken.lease_id && !conn.closed())
      lane->conn = conn.shared_from_this();
    start = taken_drain_.Note();
  }
  if (start) taken_drain_.Start();
  return true;
}

void TaskSubmitter::DrainBookings() {
  // The taken replies are swapped out before the bookings: a reply was taken after its task was
  // booked for the loop, so every task answered here is booked first.
  std::vector<TakenReply> taken;
  if (taken_flagged_.load(std::memory_order_acquire)) {
    taken.swap(taken_spare_);
    MutexLock lock(lanes_mu_);
    taken.swap(taken_);
    taken_flagged_.store(false, std::memory_order_relaxed);
  }
  bookings_.Drain(lanes_mu_,
                  [this](Booking& b) { AddOnLoop(std::move(b.task), b.key, b.lease_id); });
  if (taken.empty()) return;
  for (const TakenReply& t : taken) BookTakenReply(t);
  taken.clear();
  taken_spare_.swap(taken);
}

void TaskSubmitter::BookTakenReply(const TakenReply& taken) {
  auto it = tasks_.find(taken.task);
  if (it == tasks_.end()) return;  // finished already (cancelled with force, or failed at shutdown)
  std::unique_ptr<Running> done;
  Running& r = *it->second;
  const std::string& key = r.key;  // (kept alive by `done` below)
  ShapeQueue& q = shapes_[key];
  auto lit = q.leases.find(taken.lease_id);
  if (lit != q.leases.end()) lit->second->Answered(taken.task);
  if (r.lease_id != taken.lease_id || r.task.spec->attempt() != taken.attempt)
    return;  // runs again
  // As Finish, with the result stored already (a plain value: nothing kept for a rebuild). A
  // task cancelled meanwhile keeps the value it made.
  done = std::move(it->second);
  tasks_.erase(it);
  done->task.arg_refs.clear();
  done->task.nested.clear();
  if (!lineage_.empty() && lineage_.erase(done->task.return_id) > 0)
    lineage_count_ = lineage_.size();
  Pump(key);
  lit = q.leases.find(taken.lease_id);
  if (lit != q.leases.end()) ArmIdleTimer(key, *lit->second);
}

void TaskSubmitter::PublishIdleLease(const std::string& key, const Lease& lease) {
  MutexLock lock(lanes_mu_);
  FastLane& lane = lanes_[key];
  if (lane.conn) return;  // one idle lease per shape is enough
  lane.conn = lease.conn;
  lane.lease_id = lease.id;
  lane.devices = lease.devices;
}

bool TaskSubmitter::TakeBackIdle(const std::string& key, uint64_t lease_id) {
  MutexLock lock(lanes_mu_);
  auto it = lanes_.find(key);
  if (it == lanes_.end()) return true;
  if (it->second.conn && it->second.lease_id == lease_id) it->second.conn = nullptr;
  return it->second.unbooked.count(lease_id) == 0;
}

void TaskSubmitter::AddOnLoop(PendingTask task, const std::string& key, uint64_t sent_on) {
  TaskId id = TaskId::FromBinary(task.spec->task_id());
  std::unique_ptr<Running>& slot = tasks_[id];
  // Made from the task (a Running made empty would make an empty spec, an arena, only to
  // drop it for this one).
  if (slot) {
    slot->task = std::move(task);
  } else {
    slot = std::make_unique<Running>(std::move(task));
  }
  Running& r = *slot;
  r.key = key;
  for (size_t i = 0; i < r.task.arg_refs.size(); ++i) {
    if (r.task.arg_refs[i])
      r.ref_args.emplace_back(static_cast<int>(i), r.task.spec->args(static_cast<int>(i)));
  }
  if (sent_on != 0) {
    MutexLock lock(lanes_mu_);
    auto& unbooked = lanes_[key].unbooked;
    if (--unbooked[sent_on] == 0) unbooked.erase(sent_on);
  }
  if (failed_all_) {  // after shutdown (or the daemon's loss) nothing more runs
    Finish(id, fail_error_);
    return;
  }
  if (sent_on != 0) {
    ShapeQueue& q = shapes_[key];
    auto lit = q.leases.find(sent_on);
    if (lit != q.leases.end()) {
      r.lease_id = sent_on;
      lit->second->in_flight.push_back(id);
      return;
    }
    // The lease went before the frame could reach its worker (it died, or we shut down):
    // nothing ran it; it takes the ordinary way.
  }
  ResolveArgs(id, r);
}

void TaskSubmitter::ResolveArgs(const TaskId& id) { ResolveArgs(id, *tasks_.at(id)); }

void TaskSubmitter::ResolveArgs(const TaskId& id, Running& r) {
  uint64_t round = ++r.resolve_round;
  if (r.ref_args.empty()) {  // all values: nothing to wait for
    r.unresolved = 0;
    Enqueue(id, r);
    return;
  }
  r.arg_producers.assign(r.task.arg_refs.size(), std::string());
  // The callbacks post to the loop, so `unresolved` is set before any of them counts down.
  r.unresolved = ResolveArgRefs(
      r.task.arg_refs, store_, host_, [this, id, round](size_t i, const StoredObject& obj) {
        asio::post(io_, [this, id, round, i, obj] { OnArgReady(id, round, i, obj); });
      });
  if (r.unresolved == 0) Enqueue(id, r);
}

void TaskSubmitter::OnArgReady(const TaskId& id, uint64_t round, size_t index,
                               const StoredObject& obj) {
  DrainBookings();
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second->resolve_round != round) return;  // (a round before a rerun)
  Running& r = *it->second;
  r.arg_producers[index] = obj.device_producer.worker_id;
  if (obj.is_error()) {
    // A failed argument fails the task with the same error, as in Ray.
    Finish(id, obj);
    return;
  }
  SetResolvedArg(*r.task.spec, index, r.task.arg_refs[index]->id(), obj);
  if (--r.unresolved == 0) Enqueue(id, r);
}

void TaskSubmitter::Enqueue(const TaskId& id, Running& r) {
  ShapeQueue& q = shapes_[r.key];
  if (!q.has_spec) {  // tasks of one key have equal lease specs
    q.spec = r.task.lease;
    q.has_spec = true;
  }
  q.queue.push_back(id);
  Pump(r.key);
}

void TaskSubmitter::Pump(const std::string& key) {
  ShapeQueue& q = shapes_[key];
  const size_t depth = q.saturated && !q.spec.exclusive ? config_.max_tasks_in_flight_per_lease : 1;
  std::unordered_set<uint64_t> taken;  // idle leases the fast lane took meanwhile
  while (!q.queue.empty()) {
    Lease* best = nullptr;
    for (auto& [lid, lease] : q.leases) {
      if (lease->conn->closed() || taken.count(lid) > 0) continue;
      if (lease->in_flight.size() >= depth) continue;
      if (best == nullptr || lease->in_flight.size() < best->in_flight.size()) best = lease.get();
    }
    if (best == nullptr) break;
    if (best->in_flight.empty() && !TakeBackIdle(key, best->id)) {
      taken.insert(best->id);  // a submitting thread sent a task on it just now
      continue;
    }
    TaskId id = q.queue.front();
    q.queue.pop_front();
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    Running& r = *it->second;
    if (!r.task.fits && r.task.spec->ByteSizeLong() + 1024 > config_.max_frame_bytes) {
      Finish(id, StoredObject::Error(rpc::ERROR_SYSTEM,
                                     "task " + r.task.spec->name() + " carries " +
                                         std::to_string(r.task.spec->ByteSizeLong()) +
                                         " bytes of arguments, more than a message may hold (" +
                                         std::to_string(config_.max_frame_bytes) + " bytes)"));
      continue;
    }
    r.lease_id = best->id;
    best->in_flight.push_back(id);
    rpc::Envelope env;
    auto* push = env.mutable_push_task();
    push->set_lease_id(best->id);
    push->mutable_devices()->Assign(best->devices.begin(), best->devices.end());
    LentSpec lent(push, r.task.spec.get());
    best->conn->Send(env);
  }
  if (!q.queue.empty() && q.lease_request == 0 && q.connecting == 0) {
    leases_requested_++;
    // The id is known once RequestLease returns; `done` may run before that (daemon gone).
    struct Req {
      uint64_t id = 0;
      bool done = false;
    };
    auto req = std::make_shared<Req>();
    uint64_t id = leases_.RequestLease(
        q.spec,
        [this, key](bool infeasible) {
          DrainBookings();
          ShapeQueue& sq = shapes_[key];
          if (infeasible) {
            if (!sq.warned_infeasible) {
              sq.warned_infeasible = true;
              PRISM_LOG_WARN(
                  "tasks that need {{{}}} wait: no node of this cluster has that; they run once a "
                  "node "
                  "that does joins (prism status lists this demand)",
                  sq.spec.shape.ToString());
            }
            return;
          }
          sq.saturated = true;
          Pump(key);
        },
        [this, key, req](LeaseOutcome o) {
          req->done = true;
          OnLeaseOutcome(key, req->id, o);
        });
    req->id = id;
    if (!req->done) shapes_[key].lease_request = id;
  } else if (q.queue.empty() && q.lease_request != 0) {
    // Nothing waits for a worker any more: withdraw the request rather than take a lease
    // we would only give back.
    leases_.CancelLeaseRequest(q.lease_request);
    q.lease_request = 0;
  }
}

void TaskSubmitter::OnLeaseOutcome(const std::string& key, uint64_t request_id,
                                   const LeaseOutcome& outcome) {
  DrainBookings();
  ShapeQueue& q = shapes_[key];
  if (q.lease_request == request_id) q.lease_request = 0;
  if (outcome.status.ok()) q.saturated = false;
  if (!outcome.status.ok()) {
    // No worker will come for this shape: fail what waits for one.
    auto kind = outcome.kind == rpc::ERROR_NONE ? rpc::ERROR_SYSTEM : outcome.kind;
    StoredObject err = StoredObject::Error(kind, outcome.status.message());
    auto waiting = std::move(q.queue);
    q.queue.clear();
    for (const TaskId& id : waiting) Finish(id, err);
    return;
  }
  leases_granted_++;
  // Connect to the worker without blocking the loop: the worker's own loop may be busy
  // connecting to us at the same moment.
  rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_CLIENT, config_.token);
  hello.mutable_hello()->set_expect_worker_id(outcome.worker.worker_id());
  q.connecting++;
  rpc::AsyncConnectAndHello(io_, outcome.worker, hello, std::chrono::seconds(10),
                            [this, key, outcome](Result<rpc::Connected> connected) {
                              OnWorkerConnected(key, outcome, std::move(connected));
                            });
}

void TaskSubmitter::OnWorkerConnected(const std::string& key, const LeaseOutcome& outcome,
                                      Result<rpc::Connected> connected) {
  DrainBookings();
  const uint64_t lid = outcome.lease_id;
  const WorkerId worker = WorkerId::FromBinary(outcome.worker.worker_id());
  ShapeQueue& q = shapes_[key];
  q.connecting--;
  if (failed_all_) {
    if (connected.ok()) leases_.ReturnLease(lid, false);
    return;
  }
  if (!connected.ok()) {
    PRISM_LOG_WARN("cannot reach leased worker {}: {}", worker.Hex(),
                   connected.status().ToString());
    leases_.ReturnLease(lid, true);
    leases_returned_++;
    if (++q.connect_failures >= 3) {
      StoredObject err =
          StoredObject::Error(rpc::ERROR_SYSTEM, "cannot reach the workers leased for this task: " +
                                                     connected.status().message());
      auto waiting = std::move(q.queue);
      q.queue.clear();
      q.connect_failures = 0;
      for (const TaskId& id : waiting) Finish(id, err);
      return;
    }
    Pump(key);
    return;
  }
  q.connect_failures = 0;
  auto lease = std::make_unique<Lease>();
  lease->id = lid;
  lease->devices = outcome.devices;
  lease->conn = rpc::Connection::Create(std::move(connected->socket), config_.max_frame_bytes);
  lease->conn->ShareReads();  // a submitting thread may read its own reply (ReadOwnReply)
  lease->conn->Start(
      [this, key, lid](rpc::Connection& c, rpc::Envelope& msg) {
        if (msg.has_stream_item()) {
          OnStreamItem(lid, *msg.mutable_stream_item());
        } else if (msg.has_task_reply()) {
          OnTaskReply(key, lid, *msg.mutable_task_reply());
        } else if (msg.has_remove_borrowers()) {
          host_.RemoveBorrowers(msg.remove_borrowers());
        } else {
          c.Close(Status::ProtocolError("unexpected message from a worker"));
        }
      },
      [this, key, lid](rpc::Connection&, const Status& st) { OnWorkerLost(key, lid, st); },
      std::move(connected->leftover));
  q.leases[lid] = std::move(lease);
  Pump(key);
  ArmIdleTimer(key, *q.leases[lid]);
}

void TaskSubmitter::ArmIdleTimer(const std::string& key, Lease& lease) {
  ShapeQueue& q = shapes_[key];
  if (!lease.in_flight.empty() || !q.queue.empty()) return;
  // One timer per idle period, not one per task: a lease that goes idle after every task (sync
  // calls) only records when; the timer, when it fires, looks at how long the lease has been
  // idle and waits out the rest.
  lease.idle_since = std::chrono::steady_clock::now();
  PublishIdleLease(key, lease);
  if (!lease.timer_armed) StartIdleTimer(key, lease);
}

void TaskSubmitter::StartIdleTimer(const std::string& key, Lease& lease) {
  if (!lease.idle_timer) lease.idle_timer = std::make_unique<asio::steady_timer>(io_);
  lease.timer_armed = true;
  lease.idle_timer->expires_at(lease.idle_since + std::chrono::milliseconds(config_.lease_idle_ms));
  uint64_t lid = lease.id;
  lease.idle_timer->async_wait([this, key, lid](const asio::error_code& ec) {
    DrainBookings();
    ShapeQueue& sq = shapes_[key];
    auto it = sq.leases.find(lid);
    if (it == sq.leases.end()) return;
    it->second->timer_armed = false;
    if (ec || !it->second->in_flight.empty() || !sq.queue.empty())
      return;  // busy: re-armed when idle
    // Used meanwhile (by the loop, or by the fast lane just now): wait from its last idle moment.
    if (std::chrono::steady_clock::now() - it->second->idle_since <
            std::chrono::milliseconds(config_.lease_idle_ms) ||
        !TakeBackIdle(key, lid)) {
      StartIdleTimer(key, *it->second);
      return;
    }
    auto conn = it->second->conn;
    sq.leases.erase(it);
    leases_.ReturnLease(lid, false);
    leases_returned_++;
    conn->Close(Status::Cancelled("lease returned"));
  });
}

void TaskSubmitter::OnTaskReply(const std::string& key, uint64_t lease_id, rpc::TaskReply& reply) {
  DrainBookings();
  std::unique_ptr<Running> done;
  TaskId id = TaskId::FromBinary(reply.task_id());
  auto it = tasks_.find(id);
  ShapeQueue& q = shapes_[key];
  auto lit = q.leases.find(lease_id);
  if (lit != q.leases.end()) lit->second->Answered(id);
  // A reply for another attempt (or a task already finished) is stale: drop it.
  if (it != tasks_.end() && it->second->lease_id == lease_id &&
      it->second->task.spec->attempt() == reply.attempt()) {
    if (it->second->cancelled) {
      DiscardReply(reply, host_, it->second->task.spec->num_returns());
      Finish(id, StoredObject::Error(rpc::ERROR_CANCELLED,
                                     "task " + it->second->task.spec->name() + " was cancelled"));
    } else {
      std::vector<StoredObject> results =
          ResultsFromReply(reply, host_, it->second->task.spec->num_returns());
      StoredObject first = std::move(results.front());
      results.erase(results.begin());
      done = Finish(it, std::move(first), std::move(results));
    }
  }
  Pump(key);
  lit = q.leases.find(lease_id);
  if (lit != q.leases.end()) ArmIdleTimer(key, *lit->second);
  // `done` goes last: freeing its spec (allocated by the submitting thread) is slow, and the
  // lease is back on offer to that thread before.
}

void TaskSubmitter::OnStreamItem(uint64_t lease_id, rpc::StreamItem& item) {
  DrainBookings();
  // Value ids are ReturnObjectId(task, 1 + index), index 1 .. kMaxStreamValues; others are bogus.
  if (!TaskId::IsValidBinary(item.task_id()) || item.index() < 1 ||
      item.index() > kMaxStreamValues) {
    PRISM_LOG_WARN("dropping a stream value with a bad task id or index {}", item.index());
    return;
  }
  auto it = tasks_.find(TaskId::FromBinary(item.task_id()));
  bool wanted = it != tasks_.end() && it->second->lease_id == lease_id && !it->second->cancelled &&
                it->second->task.spec->streaming() &&
                it->second->task.spec->attempt() == item.attempt() &&
                item.index() == it->second->stream_received + 1;
  if (!wanted) {
    // A cancelled task's, or one out of order: nobody reads it. Taking it and dropping it
    // releases the refs lent with it; a copy in the store goes unless the caller holds that id.
    StoredObject dropped = ResultFromReturn(*item.mutable_item(), host_);
    bool held = it != tasks_.end() && item.index() <= it->second->stream_received;
    if (dropped.in_store && !held) {
      host_.DiscardStored(ReturnObjectId(TaskId::FromBinary(item.task_id()),
                                         static_cast<uint32_t>(item.index() + 1)));
    }
    return;
  }
  it->second->stream_received = item.index();
  host_.StreamItem(it->first, item.index(), ResultFromReturn(*item.mutable_item(), host_));
}

void TaskSubmitter::OnWorkerLost(const std::string& key, uint64_t lease_id, const Status& why) {
  DrainBookings();
  ShapeQueue& q = shapes_[key];
  auto lit = q.leases.find(lease_id);
  if (lit == q.leases.end()) return;  // returned on purpose
  std::unique_ptr<Lease> lease = std::move(lit->second);
  q.leases.erase(lit);
  (void)TakeBackIdle(key, lease_id);  // off offer (what went on it meanwhile was drained above)
  leases_.ReturnLease(lease_id, true);
  leases_returned_++;
  std::vector<TaskId> retry;
  for (const TaskId& id : lease->in_flight) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    Running& r = *it->second;
    if (r.task.retries_left != 0) {
      if (r.task.retries_left > 0) r.task.retries_left--;
      r.task.spec->set_attempt(r.task.spec->attempt() + 1);
      r.task.spec->set_stream_skip(r.stream_received);  // the new run sends only later values
      r.lease_id = 0;
      tasks_retried_++;
      retry.push_back(id);
    } else {
      Finish(id, StoredObject::Error(
                     rpc::ERROR_WORKER_CRASHED,
                     "the worker running task " + r.task.spec->name() + " died (" + why.message() +
                         ") after " + std::to_string(r.task.spec->attempt() + 1) + " attempt(s)"));
    }
  }
  for (auto it = retry.rbegin(); it != retry.rend(); ++it) q.queue.push_front(*it);
  Pump(key);
}

PendingTask TaskSubmitter::AsSubmitted(const Running& r) {
  PendingTask t = r.task;
  for (const auto& [i, arg] : r.ref_args) *t.spec->mutable_args(i) = arg;
  return t;
}

void TaskSubmitter::Finish(const TaskId& id, StoredObject result, std::vector<StoredObject> more) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Finish(it, std::move(result), std::move(more));
}

std::unique_ptr<TaskSubmitter::Running> TaskSubmitter::Finish(Tasks::iterator it,
                                                              StoredObject result,
                                                              std::vector<StoredObject> more) {
  const TaskId id = it->first;
  Running& r = *it->second;
  if (result.is_error() && result.error.kind() == rpc::ERROR_OBJECT_LOST && !r.cancelled &&
      r.lost_arg_runs > 0) {
    // An argument's device objects went with the worker that made them: if this process can
    // rebuild it, the task runs again once it is back (not counted as a retry of its own).
    std::vector<PendingTask> rerun;
    bool rebuilding = false;
    for (size_t i = 0; i < r.task.arg_refs.size(); ++i) {
      const internal::RefPtr& ref = r.task.arg_refs[i];
      if (!ref || !host_.IsSelf(ref->owner())) continue;
      std::optional<StoredObject> now = store_.GetIfReady(ref->id());
      if (!now) {  // being rebuilt already
        rebuilding = true;
      } else if (i < r.arg_producers.size() &&
                 now->device_producer.worker_id != r.arg_producers[i]) {
        rebuilding = true;  // rebuilt since this run resolved it: a new value to read
      } else if (!now->device_producer.socket_path.empty() &&
                 host_.ProducerGone(now->device_producer)) {
        rebuilding |= RebuildInto(ref->id(), "", &rerun);  // lost with its producer
      }
    }
    if (rebuilding) {
      r.lost_arg_runs--;
      for (const auto& [i, arg] : r.ref_args) *r.task.spec->mutable_args(i) = arg;
      r.task.spec->set_attempt(r.task.spec->attempt() + 1);
      r.lease_id = 0;
      tasks_retried_++;
      for (PendingTask& t : rerun) {
        std::string key = t.lease.Key();
        AddOnLoop(std::move(t), key, 0);
      }
      ResolveArgs(id);
      return nullptr;
    }
  }
  ObjectId rid = r.task.return_id;
  if (result.is_error() && result.error.type_name().empty() &&
      result.error.kind() == rpc::ERROR_TASK) {
    result.error.set_type_name("unknown");
  }
  std::optional<PendingTask> keep;
  if (!result.is_error() && !result.device_producer.worker_id.empty() && r.task.retries_left != 0 &&
      !r.task.spec->streaming() && r.task.spec->num_returns() <= 1) {
    keep = AsSubmitted(r);
  }
  // Out of the table before anything is stored: storing runs callbacks, and `it` would not
  // survive one that adds a task (the table moves its slots when it grows).
  std::unique_ptr<Running> done = std::move(it->second);
  tasks_.erase(it);
  StoreMoreResults(store_, host_, *done->task.spec, result, std::move(more));
  // The argument refs go before the result is seen (a kept task holds its own).
  done->task.arg_refs.clear();
  done->task.nested.clear();
  if (StoreResult(store_, host_, rid, std::move(result)) && keep) {
    lineage_[rid] = std::move(*keep);
  } else {
    lineage_.erase(rid);  // (a rebuild that ended without device objects, or unwanted)
  }
  lineage_count_ = lineage_.size();
  return done;
}

bool TaskSubmitter::RebuildInto(const ObjectId& id, const std::string& dead,
                                std::vector<PendingTask>* rerun) {
  auto lit = lineage_.find(id);
  if (lit == lineage_.end()) return false;
  if (!store_.Contains(id)) {  // (its release is on its way)
    lineage_.erase(lit);
    lineage_count_ = lineage_.size();
    return false;
  }
  std::optional<StoredObject> now = store_.GetIfReady(id);
  if (!now) return true;  // being rebuilt already
  if (now->device_producer.worker_id.empty()) return false;
  if (!dead.empty() && now->device_producer.worker_id != dead) return false;
  PendingTask& kept = lit->second;
  if (kept.retries_left == 0) return false;  // its retries are spent: readers get ObjectLostError
  if (kept.retries_left > 0) kept.retries_left--;
  kept.spec->set_attempt(kept.spec->attempt() + 1);
  if (!store_.Reset(id)) return false;
  PRISM_LOG_INFO(
      "rebuilding object {}: the worker holding its device objects is gone; task {} runs again",
      id.Hex(), kept.spec->name());
  tasks_retried_++;
  rerun->push_back(kept);
  return true;
}

bool TaskSubmitter::Rebuild(const ObjectId& id) {
  DrainBookings();
  std::optional<StoredObject> now = store_.GetIfReady(id);
  if (!now) return lineage_.count(id) > 0;  // being rebuilt: read the new value
  if (!now->device_producer.socket_path.empty() && !host_.ProducerGone(now->device_producer)) {
    // Its producer lives: the reader may have had an older value (read again), or the value is
    // lost some other way (reading again fails the same, and the reader gives up).
    return lineage_.count(id) > 0;
  }
  std::vector<PendingTask> rerun;
  bool rebuilding = RebuildInto(id, "", &rerun);
  for (PendingTask& t : rerun) {
    std::string key = t.lease.Key();
    AddOnLoop(std::move(t), key, 0);
  }
  return rebuilding;
}

void TaskSubmitter::ProducerDied(const WorkerId& worker) {
  DrainBookings();
  std::vector<ObjectId> ids;
  for (const auto& [id, t] : lineage_) ids.push_back(id);
  std::vector<PendingTask> rerun;
  for (const ObjectId& id : ids) RebuildInto(id, worker.Binary(), &rerun);
  for (PendingTask& t : rerun) {
    std::string key = t.lease.Key();
    AddOnLoop(std::move(t), key, 0);
  }
}

void TaskSubmitter::DropLineage(const ObjectId& id) {
  DrainBookings();
  auto it = lineage_.find(id);
  if (it == lineage_.end()) return;
  PendingTask gone = std::move(it->second);  // its argument refs go after the erase
  lineage_.erase(it);
  lineage_count_ = lineage_.size();
}

bool TaskSubmitter::Cancel(const TaskId& id, bool force) {
  DrainBookings();
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return false;
  Running& r = *it->second;
  StoredObject err =
      StoredObject::Error(rpc::ERROR_CANCELLED, "task " + r.task.spec->name() + " was cancelled");
  if (r.lease_id == 0) {
    // Not pushed yet: it never runs.
    auto& q = shapes_[r.key].queue;
    q.erase(std::remove(q.begin(), q.end(), id), q.end());
    Finish(id, err);
    return true;
  }
  if (!force) {
    r.cancelled = true;
    return true;
  }
  // Force: the worker running it goes (the lease is returned as failed, and the daemon kills it);
  // the other tasks pushed to it are retried like after any worker death.
  std::string key = r.key;
  uint64_t lid = r.lease_id;
  Finish(id, err);
  auto& q = shapes_[key];
  auto lit = q.leases.find(lid);
  if (lit != q.leases.end())
    lit->second->conn->Close(Status::Cancelled("a task on it was cancelled with force"));
  return true;
}

void TaskSubmitter::FailAll(const StoredObject& error) {
  {
    // Nothing more goes out on the fast lane; what went already is booked, and fails below.
    MutexLock lock(lanes_mu_);
    for (auto& [key, lane] : lanes_) lane.conn = nullptr;
  }
  DrainBookings();
  failed_all_ = true;
  fail_error_ = error;
  std::vector<TaskId> ids;
  for (auto& [id, r] : tasks_) ids.push_back(id);
  for (const TaskId& id : ids) Finish(id, error);
  std::vector<std::unique_ptr<Lease>> open;
  {
    MutexLock lock(lanes_mu_);
    for (auto& [key, lane] : lanes_) lane.conn = nullptr;
  }
  for (auto& [key, q] : shapes_) {
    q.queue.clear();
    for (auto& [lid, lease] : q.leases) open.push_back(std::move(lease));
    q.leases.clear();
  }
  // Closed after they left the table, so the close handlers find nothing to retry.
  for (auto& lease : open) lease->conn->Close(Status::Cancelled("shutting down"));
}

}  // namespace prism

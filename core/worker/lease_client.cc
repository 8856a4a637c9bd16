#include "worker/lease_client.h"

#include <algorithm>

#include "base/logging.h"
#include "base/mutex.h"

namespace prism {

DaemonClient::DaemonClient(std::shared_ptr<rpc::Connection> conn,
                           std::function<void(const Status&)> on_lost,
                           std::function<void(const WorkerId&)> on_worker_died)
    : conn_(std::move(conn)),
      on_lost_(std::move(on_lost)),
      on_worker_died_(std::move(on_worker_died)) {}

void DaemonClient::Start(std::string initial) {
  conn_->Start([this](rpc::Connection&, rpc::Envelope& msg) { OnMessage(msg); },
               [this](rpc::Connection&, const Status& st) { OnClosed(st); }, std::move(initial));
}

std::string LeaseSpec::Key() const {
  std::string key = shape.ToString();
  for (const auto& [k, v] : env) key += std::string(1, '\0') + k + "=" + v;
  if (placement.placement_group() != 0 || placement.strategy() != rpc::STRATEGY_DEFAULT) {
    key += std::string(1, '\1') + std::to_string(placement.placement_group()) + "/" +
           std::to_string(placement.bundle_index()) + "/" + std::to_string(placement.strategy());
  }
  // Leases on one node serve only tasks pinned alike (a lease granted for a label or an affinity
  // is on a node that meets it; another task's lease may not be).
  if (!placement.node_id().empty())
    key += std::string(1, '\4') + placement.node_id() + (placement.soft() ? "~" : "!");
  if (!placement.label_selector().empty()) {
    std::map<std::string, std::string> sorted(placement.label_selector().begin(),
                                              placement.label_selector().end());
    for (const auto& [k, v] : sorted) key += std::string(1, '\5') + k + "=" + v;
  }
  if (exclusive) key += std::string(1, '\2');
  if (!runtime.empty()) key += std::string(1, '\3') + runtime;
  return key;
}

uint64_t DaemonClient::RequestLease(const LeaseSpec& spec,
                                    std::function<void(bool infeasible)> queued,
                                    std::function<void(LeaseOutcome)> done) {
  uint64_t id = next_request_id_++;
  LeaseWaiter waiter{std::move(queued), std::move(done)};
  rpc::RequestLease* req = &waiter.request;
  req->set_request_id(id);
  *req->mutable_placement() = spec.placement;
  req->set_runtime(spec.runtime);
  for (const auto& [name, milli] : spec.shape.milli()) {
    auto* r = req->add_resources();
    r->set_name(name);
    r->set_milli(milli);
  }
  for (const auto& [name, value] : spec.env) {
    auto* e = req->add_env();
    e->set_name(name);
    e->set_value(value);
  }
  if (conn_->closed()) {
    waiter.done(LeaseOutcome{Status::Unavailable("the node daemon is gone"), rpc::ERROR_SYSTEM});
    return id;
  }
  SendRequest(id, std::move(waiter));
  return id;
}

void DaemonClient::SendRequest(uint64_t id, LeaseWaiter waiter) {
  rpc::Envelope env;
  *env.mutable_request_lease() = waiter.request;
  env.mutable_request_lease()->set_request_id(id);
  lease_waiters_[id] = std::move(waiter);
  conn_->Send(env);
}

void DaemonClient::CancelLeaseRequest(uint64_t request_id) {
  if (auto s = spilled_.find(request_id); s != spilled_.end()) {
    // Sent on to another node (or waiting to go back to this one): withdrawn there.
    auto r = remotes_.find(s->second.node_address);
    if (s->second.remote_id != 0 && r != remotes_.end() &&
        r->second.generation == s->second.generation && r->second.client) {
      r->second.client->CancelLeaseRequest(s->second.remote_id);
    } else if (r != remotes_.end()) {
      auto& w = r->second.waiting;
      w.erase(std::remove(w.begin(), w.end(), request_id), w.end());
    }
    spilled_.erase(s);
    return;
  }
  if (lease_waiters_.erase(request_id) == 0) return;
  rpc::Envelope env;
  env.mutable_cancel_lease_request()->set_request_id(request_id);
  conn_->Send(env);
}

void DaemonClient::ReturnLease(uint64_t lease_id, bool worker_failed) {
  if (auto l = remote_leases_.find(lease_id); l != remote_leases_.end()) {
    RemoteLease lease = l->second;
    remote_leases_.erase(l);
    auto r = remotes_.find(lease.node_address);
    // (A lease of a connection since lost ended there with it.)
    if (r != remotes_.end() && r->second.generation == lease.generation && r->second.client)
      r->second.client->ReturnLease(lease.lease_id, worker_failed);
    return;
  }
  rpc::Envelope env;
  env.mutable_return_lease()->set_lease_id(lease_id);
  env.mutable_return_lease()->set_worker_failed(worker_failed);
  conn_->Send(env);
}

DaemonClient::~DaemonClient() { *alive_ = false; }

void DaemonClient::Close() {
  conn_->Close(Status::Cancelled("shutting down"));
  // Requests sent on to other nodes (or waiting to go back) end here too.
  auto spilled = std::move(spilled_);
  spilled_.clear();
  for (auto& [id, sp] : spilled) {
    if (sp.waiter.done)
      sp.waiter.done(LeaseOutcome{Status::Cancelled("shutting down"), rpc::ERROR_SYSTEM});
  }
  auto remotes = std::move(remotes_);
  remotes_.clear();
  for (auto& [address, r] : remotes) {
    if (!r.client) continue;
    r.client->Close();
    // Destroyed once the handlers its close queued have run.
    asio::post(conn_->executor(), [c = std::shared_ptr<DaemonClient>(std::move(r.client))] {});
  }
}

void DaemonClient::OnSpillback(const rpc::LeaseSpillback& s) {
  auto it = lease_waiters_.find(s.request_id());
  if (it == lease_waiters_.end()) return;  // withdrawn meanwhile
  LeaseWaiter waiter = std::move(it->second);
  lease_waiters_.erase(it);
  const std::string& address = s.daemon().node_address();
  if (!dial_ || address.empty()) {
    waiter.done(
        LeaseOutcome{Status::Unavailable("the node daemon sent this request to another node (" +
                                         address + "), and this process cannot reach other nodes"),
                     rpc::ERROR_SYSTEM});
    return;
  }
  spilled_total_++;
  waiter.request.set_spilled(true);
  Remote& r = RemoteFor(s.daemon());
  const uint64_t id = s.request_id();
  spilled_[id] = Spilled{std::move(waiter), address, r.generation, 0};
  if (r.client) {
    SendSpilled(id);
  } else {
    r.waiting.push_back(id);
  }
}

DaemonClient::Remote& DaemonClient::RemoteFor(const rpc::Address& daemon) {
  const std::string address = daemon.node_address();
  Remote& r = remotes_[address];
  if (r.generation != 0) return r;
  r.generation = next_generation_++;
  r.daemon = daemon;
  const uint64_t generation = r.generation;
  dial_(daemon, [this, alive = alive_, address, generation](Result<rpc::Connected> c) {
    if (!*alive) return;
    auto rit = remotes_.find(address);
    if (rit == remotes_.end() || rit->second.generation != generation) return;
    if (!c.ok()) {
      RemoteLost(address, generation, c.status());
      return;
    }
    auto conn = rpc::Connection::Create(std::move(c->socket), max_frame_bytes_);
    rit->second.client = std::make_unique<DaemonClient>(
        conn,
        [this, address, generation](const Status& st) { RemoteLost(address, generation, st); });
    rit->second.client->on_actor_update = [this](const rpc::ActorUpdate& u) {
      if (on_actor_update) on_actor_update(u);
    };
    // (The output of this job's workers there, for a driver.)
    rit->second.client->on_worker_output = [this](const rpc::WorkerOutput& out) {
      if (on_worker_output) on_worker_output(out);
    };
    rit->second.client->Start(std::move(c->leftover));
    resubscribe_tries_.erase(address);
    for (const rpc::Envelope& e : rit->second.outbox) rit->second.client->Send(e);
    rit->second.outbox.clear();
    auto waiting = std::move(rit->second.waiting);
    rit->second.waiting.clear();
    for (uint64_t id : waiting) SendSpilled(id);
  });
  return r;
}

void DaemonClient::SendToNode(const rpc::Address& daemon, const rpc::Envelope& msg) {
  if (daemon.node_address().empty() || !dial_) {
    conn_->Send(msg);
    return;
  }
  Remote& r = RemoteFor(daemon);
  if (msg.has_subscribe_actor()) r.subscribed.push_back(msg.subscribe_actor().actor_id());
  if (r.client) {
    r.client->Send(msg);
  } else {
    r.outbox.push_back(msg);
  }
}

void DaemonClient::SendSpilled(uint64_t id) {
  auto it = spilled_.find(id);
  if (it == spilled_.end()) return;
  Spilled& sp = it->second;
  auto r = remotes_.find(sp.node_address);
  if (r == remotes_.end() || r->second.generation != sp.generation || !r->second.client) return;
  DaemonClient& remote = *r->second.client;
  LeaseWaiter there;
  there.request = sp.waiter.request;
  there.queued = [this, id](bool infeasible) {
    auto s = spilled_.find(id);
    if (s == spilled_.end() || !s->second.waiter.queued) return;
    auto queued = s->second.waiter.queued;  // (it may withdraw the request)
    queued(infeasible);
  };
  there.done = [this, id, address = sp.node_address, generation = sp.generation](LeaseOutcome out) {
    auto s = spilled_.find(id);
    if (s == spilled_.end()) return;
    if (out.lost) {
      Respill(id, out.status);
      return;
    }
    auto done = std::move(s->second.waiter.done);
    spilled_.erase(s);
    if (out.status.ok()) {
      const uint64_t alias = next_remote_lease_++;
      remote_leases_[alias] = RemoteLease{address, generation, out.lease_id};
      out.lease_id = alias;
    }
    done(std::move(out));
  };
  sp.remote_id = remote.NextRequestId();
  remote.SendRequest(sp.remote_id, std::move(there));
}

void DaemonClient::Respill(uint64_t id, const Status& why) {
  auto s = spilled_.find(id);
  if (s == spilled_.end()) return;
  Spilled& sp = s->second;
  if (++sp.waiter.tries > 10 || conn_->closed()) {
    auto done = std::move(sp.waiter.done);
    spilled_.erase(s);
    done(LeaseOutcome{Status::Unavailable("the node this request was sent to (" + sp.node_address +
                                          ") cannot be reached: " + why.message()),
                      rpc::ERROR_SYSTEM});
    return;
  }
  PRISM_LOG_INFO("a lease request sent to {} goes back to this node: {}", sp.node_address,
                 why.message());
  // Parked (no node) until the pause ends; the node's view of the cluster meanwhile catches up.
  sp.node_address.clear();
  sp.generation = 0;
  sp.remote_id = 0;
  sp.waiter.request.set_spilled(false);
  auto timer = std::make_shared<asio::steady_timer>(
      conn_->executor(), std::chrono::milliseconds(std::min(100 * sp.waiter.tries, 1000)));
  timer->async_wait([this, alive = alive_, timer, id](const asio::error_code& ec) {
    if (ec || !*alive) return;
    auto p = spilled_.find(id);
    if (p == spilled_.end() || !p->second.node_address.empty()) return;  // withdrawn
    LeaseWaiter waiter = std::move(p->second.waiter);
    spilled_.erase(p);
    if (conn_->closed()) {
      waiter.done(LeaseOutcome{
          Status::Unavailable("the node daemon is gone"), rpc::ERROR_SYSTEM, 0, {}, {}, true});
      return;
    }
    SendRequest(id, std::move(waiter));
  });
}

void DaemonClient::RemoteLost(const std::string& address, uint64_t generation, const Status& why) {
  auto rit = remotes_.find(address);
  if (rit == remotes_.end() || rit->second.generation != generation) return;
  std::unique_ptr<DaemonClient> dead = std::move(rit->second.client);
  std::vector<uint64_t> waiting = std::move(rit->second.waiting);
  std::vector<std::string> subscribed = std::move(rit->second.subscribed);
  const rpc::Address daemon = rit->second.daemon;
  remotes_.erase(rit);
  PRISM_LOG_INFO("lost the connection to node {}'s daemon: {}", address, why.message());
  // (Called from within its close: destroyed once that returns.)
  if (dead) asio::post(conn_->executor(), [d = std::shared_ptr<DaemonClient>(std::move(dead))] {});
  for (uint64_t id : waiting) Respill(id, why);
  if (subscribed.empty()) return;
  if (!conn_->closed() && ++resubscribe_tries_[address] <= 3) {
    // Follow its actors again over a new connection (a dropped tunnel is not a dead node).
    for (const std::string& actor : subscribed) {
      rpc::Envelope again;
      again.mutable_subscribe_actor()->set_actor_id(actor);
      SendToNode(daemon, again);
    }
    return;
  }
  resubscribe_tries_.erase(address);
  // Actors whose records are on that node: no news will come of them.
  for (const std::string& actor : subscribed) {
    if (!on_actor_update) break;
    rpc::ActorUpdate u;
    u.set_actor_id(actor);
    u.set_state(rpc::ACTOR_DEAD);
    u.set_num_restarts(~uint32_t{0} >> 1);
    u.set_death_cause("the node that keeps its record (" + address +
                      ") cannot be reached: " + why.message());
    on_actor_update(u);
  }
}

void DaemonClient::Call(uint64_t request_id, rpc::Envelope req,
                        std::function<void(Result<rpc::Envelope>)> done) {
  {
    MutexLock lock(calls_mu_);
    if (!calls_closed_ && !conn_->closed()) {
      calls_[request_id] = std::move(done);
      done = nullptr;
    }
  }
  if (done) {
    done(Status::Unavailable("the node daemon is gone"));
    return;
  }
  // Written from this thread when nothing else is queued (Connection::Send): the event loop is
  // not woken to send it, only to read the answer.
  conn_->Send(req);
}

std::function<void(Result<rpc::Envelope>)> DaemonClient::TakeCall(uint64_t request_id) {
  MutexLock lock(calls_mu_);
  auto it = request_id == 0 ? calls_.end() : calls_.find(request_id);
  if (it == calls_.end()) return nullptr;
  auto done = std::move(it->second);
  calls_.erase(it);
  return done;
}

void DaemonClient::OnMessage(rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kWorkerDied:
      if (on_worker_died_ && WorkerId::IsValidBinary(msg.worker_died().worker_id())) {
        on_worker_died_(WorkerId::FromBinary(msg.worker_died().worker_id()));
      }
      return;
    case rpc::Envelope::kLeaseGrant: {
      auto it = lease_waiters_.find(msg.lease_grant().request_id());
      if (it == lease_waiters_.end()) {
        // A grant nobody waits for: give the worker straight back.
        ReturnLease(msg.lease_grant().lease_id(), false);
        return;
      }
      auto done = std::move(it->second.done);
      lease_waiters_.erase(it);
      LeaseOutcome granted{Status::OK(), rpc::ERROR_NONE, msg.lease_grant().lease_id(),
                           msg.lease_grant().worker()};
      granted.devices.assign(msg.lease_grant().devices().begin(),
                             msg.lease_grant().devices().end());
      done(std::move(granted));
      return;
    }
    case rpc::Envelope::kLeaseSpillback:
      OnSpillback(msg.lease_spillback());
      return;
    case rpc::Envelope::kLeaseQueued: {
      auto it = lease_waiters_.find(msg.lease_queued().request_id());
      if (it == lease_waiters_.end() || !it->second.queued) return;
      // A copy runs: the callback may withdraw this very request (its caller's queue emptied
      // meanwhile), which destroys the one in the table.
      auto queued = it->second.queued;
      queued(msg.lease_queued().infeasible());
      return;
    }
    case rpc::Envelope::kLeaseRejected: {
      auto it = lease_waiters_.find(msg.lease_rejected().request_id());
      if (it == lease_waiters_.end()) return;
      auto done = std::move(it->second.done);
      lease_waiters_.erase(it);
      done(LeaseOutcome{Status::Unavailable(msg.lease_rejected().message()),
                        msg.lease_rejected().kind()});
      return;
    }
    case rpc::Envelope::kError: {
      if (auto done = TakeCall(msg.error().request_id())) {
        done(Status(static_cast<StatusCode>(msg.error().code()), msg.error().message()));
        return;
      }
      PRISM_LOG_WARN("node daemon: {}", msg.error().message());
      return;
    }
    case rpc::Envelope::kKvReply:
    case rpc::Envelope::kPlacementGroupInfo: {
      uint64_t rid = msg.has_kv_reply() ? msg.kv_reply().request_id()
                                        : msg.placement_group_info().request_id();
      auto done = TakeCall(rid);
      if (!done) return;  // (an answer nobody waits for any more)
      done(std::move(msg));
      return;
    }
    case rpc::Envelope::kActorUpdate: {
      if (auto done = TakeCall(msg.actor_update().request_id())) {
        done(std::move(msg));
        return;
      }
      if (on_actor_update) on_actor_update(msg.actor_update());
      return;
    }
    case rpc::Envelope::kWorkerOutput:
      if (on_worker_output) on_worker_output(msg.worker_output());
      return;
    case rpc::Envelope::kPushTask:
      if (on_push) on_push(std::move(*msg.mutable_push_task()), conn_);
      return;
    default:
      PRISM_LOG_WARN("unexpected message {} from the node daemon",
                     static_cast<int>(msg.body_case()));
  }
}

void DaemonClient::OnClosed(const Status& st) {
  std::unordered_map<uint64_t, std::function<void(Result<rpc::Envelope>)>> calls;
  {
    MutexLock lock(calls_mu_);
    calls_closed_ = true;
    calls.swap(calls_);
  }
  for (auto& [id, done] : calls)
    done(Status::Unavailable("the node daemon is gone: " + st.message()));
  auto leases = std::move(lease_waiters_);
  for (auto& [id, waiter] : leases) {
    waiter.done(LeaseOutcome{Status::Unavailable("the node daemon is gone: " + st.message()),
                             rpc::ERROR_SYSTEM,
                             0,
                             {},
                             {},
                             true});
  }
  if (on_lost_) on_lost_(st);
}

}  // namespace prism

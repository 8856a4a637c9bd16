#include "worker/lease_client.h"

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
  if (exclusive) key += std::string(1, '\2');
  if (!runtime.empty()) key += std::string(1, '\3') + runtime;
  return key;
}

uint64_t DaemonClient::RequestLease(const LeaseSpec& spec,
                                    std::function<void(bool infeasible)> queued,
                                    std::function<void(LeaseOutcome)> done) {
  uint64_t id = next_request_id_++;
  rpc::Envelope env;
  auto* req = env.mutable_request_lease();
  req->set_request_id(id);
  *req->mutable_placement() = spec.placement;
  req->set_runtime(spec.runtime);
  const auto& vars = spec.env;
  for (const auto& [name, milli] : spec.shape.milli()) {
    auto* r = req->add_resources();
    r->set_name(name);
    r->set_milli(milli);
  }
  for (const auto& [name, value] : vars) {
    auto* e = req->add_env();
    e->set_name(name);
    e->set_value(value);
  }
  if (conn_->closed()) {
    done(LeaseOutcome{Status::Unavailable("the node daemon is gone"), rpc::ERROR_SYSTEM});
    return id;
  }
  lease_waiters_[id] = LeaseWaiter{std::move(queued), std::move(done)};
  conn_->Send(env);
  return id;
}

void DaemonClient::CancelLeaseRequest(uint64_t request_id) {
  if (lease_waiters_.erase(request_id) == 0) return;
  rpc::Envelope env;
  env.mutable_cancel_lease_request()->set_request_id(request_id);
  conn_->Send(env);
}

void DaemonClient::ReturnLease(uint64_t lease_id, bool worker_failed) {
  rpc::Envelope env;
  env.mutable_return_lease()->set_lease_id(lease_id);
  env.mutable_return_lease()->set_worker_failed(worker_failed);
  conn_->Send(env);
}

void DaemonClient::Close() { conn_->Close(Status::Cancelled("shutting down")); }

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
                             rpc::ERROR_SYSTEM});
  }
  if (on_lost_) on_lost_(st);
}

}  // namespace prism

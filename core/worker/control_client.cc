#include "worker/control_client.h"

#include <prism/errors.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <limits>
#include <memory>

#include "base/resources.h"
#include "base/spin.h"
#include "rpc/blocking_client.h"

namespace prism {
namespace {

PlacementGroup GroupFromInfo(const rpc::PlacementGroupInfo& info) {
  std::vector<std::map<std::string, double>> bundles;
  for (const auto& b : info.bundles()) {
    std::map<std::string, double> units;
    for (const auto& r : b.resources()) units[r.name()] = static_cast<double>(r.milli()) / kMilli;
    bundles.push_back(std::move(units));
  }
  return PlacementGroup(info.id(), info.name(), static_cast<PlacementStrategy>(info.strategy()),
                        std::move(bundles));
}

}  // namespace

DaemonControlClient::DaemonControlClient(DaemonClient& daemon, std::function<void(bool)> blocked,
                                         std::chrono::milliseconds answer_within)
    : daemon_(daemon), blocked_(std::move(blocked)), answer_within_(answer_within) {}

rpc::Envelope DaemonControlClient::Call(uint64_t request_id, rpc::Envelope req,
                                        std::chrono::milliseconds timeout) {
  struct Answer {
    std::promise<Result<rpc::Envelope>> value;
    std::atomic<bool> set{false};  // read while spinning
  };
  auto answer = std::make_shared<Answer>();
  auto fut = answer->value.get_future();
  const auto asked = std::chrono::steady_clock::now();
  daemon_.Call(request_id, std::move(req), [answer](Result<rpc::Envelope> r) {
    answer->value.set_value(std::move(r));
    answer->set.store(true, std::memory_order_release);
  });
  // A local service answers within tens of microseconds, about what waking a sleeping thread
  // costs on a VM: look for the answer for a while before sleeping (base/spin.h).
  if (SpinFor([&] { return answer->set.load(std::memory_order_acquire); }, spin_.Budget()) ||
      fut.wait_for(timeout) == std::future_status::ready) {
    spin_.Record(std::chrono::steady_clock::now() - asked);
  } else {
    throw RuntimeError("the node daemon did not answer within " + std::to_string(timeout.count()) +
                       " ms");
  }
  Result<rpc::Envelope> r = fut.get();
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kUnavailable) throw RuntimeError(r.status().message());
    if (r.status().code() == StatusCode::kInfeasible) throw InfeasibleError(r.status().message());
    throw InvalidArgumentError(r.status().message());
  }
  return std::move(*r);
}

rpc::ActorUpdate DaemonControlClient::RegisterActor(rpc::CreateActor request) {
  rpc::Envelope env;
  uint64_t rid = daemon_.NextRequestId();
  request.set_request_id(rid);
  *env.mutable_create_actor() = std::move(request);
  return std::move(*Call(rid, std::move(env)).mutable_actor_update());
}

rpc::ActorUpdate DaemonControlClient::KillActor(const ActorId& id, bool no_restart,
                                                const std::string& reason) {
  rpc::Envelope env;
  uint64_t rid = daemon_.NextRequestId();
  auto* k = env.mutable_kill_actor();
  k->set_actor_id(id.Binary());
  k->set_no_restart(no_restart);
  k->set_reason(reason);
  k->set_request_id(rid);
  return std::move(*Call(rid, std::move(env)).mutable_actor_update());
}

rpc::ActorUpdate DaemonControlClient::LookupActor(const std::string& name,
                                                  const std::string& ray_namespace) {
  rpc::Envelope env;
  uint64_t rid = daemon_.NextRequestId();
  env.mutable_get_actor_by_name()->set_request_id(rid);
  env.mutable_get_actor_by_name()->set_name(name);
  env.mutable_get_actor_by_name()->set_ray_namespace(ray_namespace);
  return std::move(*Call(rid, std::move(env)).mutable_actor_update());
}

void DaemonControlClient::AnnounceExit(const ActorId& id, const std::string& reason) {
  rpc::Envelope env;
  env.mutable_kill_actor()->set_actor_id(id.Binary());
  env.mutable_kill_actor()->set_no_restart(true);
  env.mutable_kill_actor()->set_reason(reason);
  daemon_.Send(env);
}

PlacementGroup DaemonControlClient::CreatePlacementGroup(const PlacementGroupOptions& options) {
  if (options.bundles.empty())
    throw InvalidArgumentError("a placement group needs at least one bundle");
  rpc::Envelope env;
  uint64_t rid = daemon_.NextRequestId();
  auto* req = env.mutable_create_placement_group();
  req->set_request_id(rid);
  req->set_name(options.name);
  req->set_require_nvlink(options.require_nvlink);
  req->set_detached(options.detached);
  switch (options.strategy) {
    case PlacementStrategy::kPack:
      req->set_strategy(rpc::PLACEMENT_PACK);
      break;
    case PlacementStrategy::kSpread:
      req->set_strategy(rpc::PLACEMENT_SPREAD);
      break;
    case PlacementStrategy::kStrictPack:
      req->set_strategy(rpc::PLACEMENT_STRICT_PACK);
      break;
    case PlacementStrategy::kStrictSpread:
      req->set_strategy(rpc::PLACEMENT_STRICT_SPREAD);
      break;
    default:
      throw InvalidArgumentError("unknown placement strategy");
  }
  for (size_t i = 0; i < options.bundles.size(); ++i) {
    auto shape = ResourceSet::FromUnits(options.bundles[i]);
    if (!shape.ok())
      throw InvalidArgumentError("bundle " + std::to_string(i) + ": " + shape.status().message());
    if (shape->empty()) throw InvalidArgumentError("bundle " + std::to_string(i) + " is empty");
    if (Status st = CheckRequestShape(*shape); !st.ok()) {
      throw InvalidArgumentError("bundle " + std::to_string(i) + ": " + st.message());
    }
    auto* b = req->add_bundles();
    for (const auto& [name, milli] : shape->milli()) {
      auto* r = b->add_resources();
      r->set_name(name);
      r->set_milli(milli);
    }
  }
  return GroupFromInfo(Call(rid, std::move(env)).placement_group_info());
}

uint64_t DaemonControlClient::NewGroupRequest(rpc::PlacementGroupRequest::Op op,
                                              rpc::Envelope* env) {
  uint64_t rid = daemon_.NextRequestId();
  env->mutable_placement_group_request()->set_request_id(rid);
  env->mutable_placement_group_request()->set_op(op);
  return rid;
}

bool DaemonControlClient::WaitPlacementGroup(uint64_t id, std::chrono::milliseconds timeout) {
  rpc::Envelope env;
  uint64_t rid = NewGroupRequest(rpc::PlacementGroupRequest::WAIT, &env);
  env.mutable_placement_group_request()->set_id(id);
  // The daemon answers by the deadline at the latest (PENDING), so nothing is left waiting.
  auto ms = std::clamp<int64_t>(timeout.count(), 0, std::numeric_limits<int32_t>::max());
  env.mutable_placement_group_request()->set_timeout_ms(
      static_cast<uint32_t>(std::max<int64_t>(ms, 1)));
  if (blocked_) blocked_(true);
  struct Unblock {
    const std::function<void(bool)>& blocked;
    ~Unblock() {
      if (blocked) blocked(false);
    }
  } unblock{blocked_};
  rpc::Envelope reply = Call(rid, std::move(env), std::chrono::milliseconds(ms) + answer_within_);
  return reply.placement_group_info().state() == rpc::PG_CREATED;
}

void DaemonControlClient::RemovePlacementGroup(uint64_t id) {
  rpc::Envelope env;
  uint64_t rid = NewGroupRequest(rpc::PlacementGroupRequest::REMOVE, &env);
  env.mutable_placement_group_request()->set_id(id);
  Call(rid, std::move(env));
}

PlacementGroup DaemonControlClient::GetPlacementGroup(const std::string& name) {
  rpc::Envelope env;
  uint64_t rid = NewGroupRequest(rpc::PlacementGroupRequest::GET_BY_NAME, &env);
  env.mutable_placement_group_request()->set_name(name);
  return GroupFromInfo(Call(rid, std::move(env)).placement_group_info());
}

rpc::KvReply DaemonControlClient::CallKv(rpc::KvRequest::Op op, const std::string& ns,
                                         const std::string& key, const std::string& value,
                                         bool overwrite) {
  rpc::Envelope env;
  uint64_t rid = daemon_.NextRequestId();
  auto* r = env.mutable_kv_request();
  r->set_request_id(rid);
  r->set_op(op);
  r->set_ns(ns);
  r->set_key(key);
  r->set_value(value);
  r->set_overwrite(overwrite);
  return std::move(*Call(rid, std::move(env)).mutable_kv_reply());
}

bool DaemonControlClient::KvPut(const std::string& ns, const std::string& key,
                                const std::string& value, bool overwrite) {
  return CallKv(rpc::KvRequest::PUT, ns, key, value, overwrite).found();
}

std::optional<std::string> DaemonControlClient::KvGet(const std::string& ns,
                                                      const std::string& key) {
  rpc::KvReply reply = CallKv(rpc::KvRequest::GET, ns, key, "", false);
  if (!reply.found()) return std::nullopt;
  return std::move(*reply.mutable_value());
}

bool DaemonControlClient::KvDelete(const std::string& ns, const std::string& key) {
  return CallKv(rpc::KvRequest::DELETE, ns, key, "", false).found();
}

rpc::StatusReply ReadNodeStatus(const std::string& daemon_socket, const std::string& token) {
  auto client =
      rpc::BlockingClient::ConnectAndHello(daemon_socket, rpc::MakeHello(rpc::ROLE_CLIENT, token));
  Status st = client.status();
  if (st.ok()) {
    rpc::Envelope req;
    req.mutable_status_request()->set_request_id(1);
    st = client->Send(req);
    if (st.ok()) {
      auto reply = client->Receive(10000);
      if (reply.ok() && reply->has_status_reply()) {
        return std::move(*reply->mutable_status_reply());
      }
      st = reply.ok() ? Status::ProtocolError("no status in the reply") : reply.status();
    }
  }
  throw RuntimeError("cannot read the node daemon's status: " + st.ToString());
}

ObjectStoreStats StoreStatsOf(const rpc::StatusReply& status) {
  const auto& o = status.store();
  ObjectStoreStats s;
  s.capacity = o.capacity();
  s.used = o.used();
  s.pinned = o.pinned();
  s.spilled = o.spilled();
  s.num_objects = o.num_objects();
  s.num_spilled = o.num_spilled();
  s.spills_total = o.spills_total();
  s.restores_total = o.restores_total();
  s.spill_dir = o.spill_dir();
  return s;
}

std::vector<NodeInfo> NodesOf(const rpc::StatusReply& status) {
  std::vector<NodeInfo> out;
  auto units = [](const auto& amounts) {
    std::map<std::string, double> m;
    for (const auto& r : amounts) m[r.name()] = static_cast<double>(r.milli()) / kMilli;
    return m;
  };
  for (const auto& node : status.nodes()) {
    NodeInfo n;
    n.node_id = NodeId::FromBinary(node.node_id()).Hex();
    n.alive = node.state() == rpc::NODE_ALIVE;
    n.is_head = node.is_head();
    n.address = node.ip();
    n.port = node.port();
    n.hostname = node.hostname();
    n.session_dir = node.session_dir();
    n.labels = {node.labels().begin(), node.labels().end()};
    n.death_cause = node.death_cause();
    n.resources = units(node.total());
    n.available = units(node.available());
    n.object_store_capacity = node.object_store_capacity();
    n.object_store_used = node.object_store_used();
    out.push_back(std::move(n));
  }
  return out;
}

}  // namespace prism

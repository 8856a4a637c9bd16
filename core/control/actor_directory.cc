#include "control/actor_directory.h"

#include "base/logging.h"
#include "control/requests.h"

namespace prism {

ActorDirectory::ActorDirectory(const NodeId& node, std::function<void(const ActorRecord&)> on_dead)
    : node_(node), on_dead_(std::move(on_dead)) {}

// The key of a named actor: names are unique within their namespace.
std::string ActorDirectory::NamespacedName(const std::string& ns, const std::string& name) {
  return ns + '\0' + name;
}

Result<ActorDirectory::Created> ActorDirectory::Create(const JobId& job, bool job_alive,
                                                       const rpc::CreateActor& req) {
  const auto& spec = req.spec();
  const auto& c = spec.actor_creation();
  if (!TaskId::IsValidBinary(c.actor_id()) || c.actor_id() != spec.task_id()) {
    return Status::InvalidArgument("an actor's id is its creation task's id (16 bytes)");
  }
  TaskId id = TaskId::FromBinary(c.actor_id());
  if (auto known = actors_.find(id); known != actors_.end()) {
    if (known->second.job != job)
      return Status::AlreadyExists("actor " + id.Hex() + " exists already");
    return Created{&known->second, false};
  }
  if (!c.name().empty() && names_.count(NamespacedName(c.ray_namespace(), c.name())) > 0) {
    return Status::AlreadyExists(
        "an actor named '" + c.name() + "' exists already" +
        (c.ray_namespace().empty() ? "" : " in namespace '" + c.ray_namespace() + "'"));
  }
  if (c.max_concurrency() == 0)
    return Status::InvalidArgument("max_concurrency must be at least 1");
  {
    std::map<std::string, std::string> env;
    std::string key;
    PRISM_RETURN_IF_ERROR(EnvFromProto(c.env(), &env, &key));
  }
  auto shape = ShapeFromProto(req.resources());
  if (!shape.ok()) return Status::InvalidArgument("invalid resources: " + shape.status().message());
  PRISM_RETURN_IF_ERROR(CheckRequestShape(*shape));
  if (req.placement().bundle_index() < -1) {
    return Status::InvalidArgument("a bundle index is -1 (any bundle) or the bundle's position");
  }
  if (!job_alive) return Status::NotFound("the caller's job has ended");
  ActorRecord& a = actors_[id];
  a.id = id;
  a.job = job;
  a.spec = spec;
  a.shape = *shape;
  a.placement = req.placement();
  if (!c.name().empty()) names_[NamespacedName(c.ray_namespace(), c.name())] = id;
  return Created{&a, true};
}

ActorRecord* ActorDirectory::Find(const TaskId& id) {
  auto it = actors_.find(id);
  return it == actors_.end() ? nullptr : &it->second;
}

ActorRecord* ActorDirectory::Find(const std::string& binary) {
  return TaskId::IsValidBinary(binary) ? Find(TaskId::FromBinary(binary)) : nullptr;
}

ActorRecord* ActorDirectory::FindByName(const std::string& ns, const std::string& name) {
  auto it = names_.find(NamespacedName(ns, name));
  return it == names_.end() ? nullptr : &actors_.at(it->second);
}

void ActorDirectory::Alive(ActorRecord& a) {
  a.state = rpc::ACTOR_ALIVE;
  Publish(a);
}

void ActorDirectory::Dead(ActorRecord& a, const std::string& cause) {
  if (a.dead()) return;
  a.state = rpc::ACTOR_DEAD;
  a.death_cause = cause;
  const std::string& name = a.spec.actor_creation().name();
  auto n = names_.find(NamespacedName(a.spec.actor_creation().ray_namespace(), name));
  if (!name.empty() && n != names_.end() && n->second == a.id) names_.erase(n);
  PRISM_LOG_INFO("actor {} is dead: {}", a.id.Hex(), cause);
  Publish(a);
  // Keep a short record (for status, late subscribers and retried creations), not its arguments.
  a.spec.clear_args();
  dead_.push_back(a.id);
  constexpr size_t kKeptDead = 10000;
  while (dead_.size() > kKeptDead) {
    auto old = actors_.find(dead_.front());
    dead_.pop_front();
    if (old != actors_.end() && old->second.dead() && &old->second != &a) actors_.erase(old);
  }
  on_dead_(a);
}

void ActorDirectory::RequestKill(ActorRecord& a, bool no_restart, const std::string& reason) {
  if (!no_restart) return;
  a.kill_requested = true;
  a.death_cause = reason;
}

bool ActorDirectory::ProcessDied(const TaskId& id, const std::string& why) {
  ActorRecord* found = Find(id);
  if (found == nullptr || found->dead()) return false;
  ActorRecord& a = *found;
  a.worker = WorkerId();
  a.socket_path.clear();
  if (a.kill_requested) {
    Dead(a, a.death_cause.empty() ? "it was killed" : a.death_cause);
    return false;
  }
  int max = a.spec.actor_creation().max_restarts();
  if (max >= 0 && static_cast<int>(a.num_restarts) >= max) {
    Dead(a, "its process died (" + why + ")" +
                (max > 0 ? " and its " + std::to_string(max) + " restart(s) are used up" : ""));
    return false;
  }
  a.num_restarts++;
  a.state = rpc::ACTOR_RESTARTING;
  PRISM_LOG_INFO("actor {} restarts ({}): {}", id.Hex(), a.num_restarts, why);
  Publish(a);
  return true;
}

void ActorDirectory::SendUpdate(rpc::Connection& conn, const ActorRecord& a,
                                uint64_t request_id) const {
  rpc::Envelope env;
  auto* u = env.mutable_actor_update();
  u->set_request_id(request_id);
  u->set_actor_id(a.id.Binary());
  u->set_state(a.state);
  if (a.state == rpc::ACTOR_ALIVE) {
    u->mutable_address()->set_socket_path(a.socket_path);
    u->mutable_address()->set_worker_id(a.worker.Binary());
    u->mutable_address()->set_node_id(node_.Binary());
    u->mutable_address()->set_node_address(node_address_);
  }
  const auto& c = a.spec.actor_creation();
  u->set_name(c.name());
  u->set_num_restarts(a.num_restarts);
  u->set_death_cause(a.death_cause);
  *u->mutable_owner() = c.owner();
  u->set_detached(c.detached());
  u->set_max_task_retries(c.max_task_retries());
  conn.Send(env);
}

void ActorDirectory::Subscribe(ActorRecord& a, rpc::Connection& conn) {
  for (auto& w : a.subscribers) {
    if (w.lock().get() == &conn) return;
  }
  a.subscribers.push_back(std::static_pointer_cast<rpc::Connection>(conn.shared_from_this()));
}

void ActorDirectory::Subscribe(const std::string& binary_id, rpc::Connection& conn) {
  ActorRecord* a = Find(binary_id);
  if (a != nullptr) {
    Subscribe(*a, conn);
    SendUpdate(conn, *a, 0);
    return;
  }
  rpc::Envelope env;
  auto* u = env.mutable_actor_update();
  u->set_actor_id(binary_id);
  u->set_state(rpc::ACTOR_DEAD);
  u->set_death_cause("this cluster has no such actor");
  conn.Send(env);
}

void ActorDirectory::Publish(ActorRecord& a) {
  std::vector<std::weak_ptr<rpc::Connection>> live;
  for (auto& w : a.subscribers) {
    auto c = w.lock();
    if (!c || c->closed()) continue;
    SendUpdate(*c, a, 0);
    live.push_back(w);
  }
  a.subscribers = std::move(live);
}

void ActorDirectory::Report(rpc::StatusReply* status,
                            const std::function<pid_t(const WorkerId&)>& pid_of) const {
  for (const auto& [id, a] : actors_) {
    auto* line = status->add_actors();
    line->set_actor_id(id.Binary());
    line->set_name(a.spec.actor_creation().name());
    line->set_state(a.state);
    line->set_num_restarts(a.num_restarts);
    line->set_pid(a.worker.IsNil() ? 0 : pid_of(a.worker));
    line->set_death_cause(a.death_cause);
    line->set_detached(a.detached());
  }
}

std::vector<TaskId> ActorDirectory::Live(
    const std::function<bool(const ActorRecord&)>& pred) const {
  std::vector<TaskId> out;
  for (const auto& [id, a] : actors_) {
    if (!a.dead() && pred(a)) out.push_back(id);
  }
  return out;
}

}  // namespace prism

#include "node/lease_manager.h"

#include "base/ids.h"
#include "base/logging.h"
#include "control/requests.h"

namespace prism {

using WorkerState = WorkerPool::State;

LeaseManager::LeaseManager(LeaseManagerConfig config, const NodeId& node, ResourcePool& node_pool,
                           PlacementGroups& groups, WorkerPool& workers, Host& host)
    : config_(std::move(config)),
      node_(node),
      node_pool_(node_pool),
      groups_(groups),
      workers_(workers),
      host_(host) {}

void LeaseManager::Reject(rpc::Connection& conn, uint64_t request_id, rpc::ErrorKind kind,
                          const std::string& why) {
  rpc::Envelope env;
  env.mutable_lease_rejected()->set_request_id(request_id);
  env.mutable_lease_rejected()->set_kind(kind);
  env.mutable_lease_rejected()->set_message(why);
  conn.Send(env);
}

void LeaseManager::TellQueued(LeaseRequest& req, bool infeasible) {
  if (req.told_queued || !req.from || req.from->closed()) return;  // (actors: no caller to tell)
  rpc::Envelope env;
  env.mutable_lease_queued()->set_request_id(req.request_id);
  env.mutable_lease_queued()->set_infeasible(infeasible);
  req.from->Send(env);
  req.told_queued = true;
}

void LeaseManager::Request(rpc::Connection& conn, const JobId& job, const rpc::RequestLease& req) {
  auto reject = [&](rpc::ErrorKind kind, const std::string& why) {
    Reject(conn, req.request_id(), kind, why);
  };
  auto shape = ShapeFromProto(req.resources());
  if (!shape.ok()) {
    reject(rpc::ERROR_SYSTEM, "invalid resource request: " + shape.status().message());
    return;
  }
  WorkerPool::Job* j = workers_.FindJob(job);
  if (j == nullptr) {
    reject(rpc::ERROR_SYSTEM, "job " + std::to_string(JobIdToInt(job)) + " has ended");
    return;
  }
  if (Status st = CheckRequestShape(*shape); !st.ok()) {
    reject(rpc::ERROR_SYSTEM, "invalid resource request: " + st.message());
    return;
  }
  if (req.placement().bundle_index() < -1) {
    reject(rpc::ERROR_SYSTEM, "a bundle index is -1 (any bundle) or the bundle's position");
    return;
  }
  LeaseRequest lr{std::static_pointer_cast<rpc::Connection>(conn.shared_from_this()),
                  req.request_id(), job, std::move(*shape)};
  lr.placement = req.placement();
  lr.spilled = req.spilled();
  if (!req.placement().node_id().empty() && !NodeId::IsValidBinary(req.placement().node_id())) {
    reject(rpc::ERROR_SYSTEM, "a node affinity names a node id (16 bytes)");
    return;
  }
  if (std::string bad = CheckLabelSelector(req.placement().label_selector()); !bad.empty()) {
    reject(rpc::ERROR_SYSTEM, bad);
    return;
  }
  if (!req.runtime().empty() && req.runtime() != "cpp" && req.runtime() != "python") {
    reject(rpc::ERROR_SYSTEM,
           "unknown worker runtime '" + req.runtime() + "' (known: \"\", \"cpp\" and \"python\")");
    return;
  }
  if (req.runtime() == "python" && j->python_executable.empty()) {
    reject(
        rpc::ERROR_SYSTEM,
        "this job names no Python interpreter for Python workers (InitOptions::python_executable)");
    return;
  }
  if (req.runtime() == "cpp" && !workers_.CanStartCpp()) {
    reject(rpc::ERROR_SYSTEM,
           "this daemon cannot start generic C++ workers (its executable is not readable)");
    return;
  }
  lr.runtime = req.runtime();
  Status env_ok = EnvFromProto(req.env(), &lr.env, &lr.env_key);
  if (!env_ok.ok()) {
    reject(rpc::ERROR_SYSTEM, env_ok.message());
    return;
  }
  if (!req.runtime().empty()) lr.env_key += std::string(1, '\1') + "runtime=" + req.runtime();
  pending_.push_back(std::move(lr));
  Schedule();
}

void LeaseManager::Cancel(const rpc::Connection& conn, uint64_t request_id) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->from.get() == &conn && it->request_id == request_id) {
      pending_.erase(it);
      return;
    }
  }
}

void LeaseManager::Return(rpc::Connection& conn, const rpc::ReturnLease& ret) {
  auto it = leases_.find(ret.lease_id());
  if (it == leases_.end() && dropped_.erase(ret.lease_id()) > 0) {
    return;  // it ended here first (its worker died or was stopped): nothing to give back
  }
  if (it == leases_.end() || it->second.holder != &conn) {
    rpc::SendErrorFrame(
        conn, 0,
        Status::NotFound("lease " + std::to_string(ret.lease_id()) +
                         " is not held by this connection (returned twice, or never granted)"));
    return;
  }
  Lease lease = it->second;
  leases_.erase(it);
  Release(lease);
  if (WorkerPool::Worker* w = workers_.Find(lease.worker); w != nullptr) {
    if (ret.worker_failed()) {
      host_.KillWorker(lease.worker, "its lease holder lost it");
    } else {
      w->state = WorkerState::kIdle;
      w->lease_id = 0;
    }
  }
  Schedule();
}

void LeaseManager::SetBlocked(const WorkerPool::Worker& w, bool blocked) {
  if (w.lease_id == 0) return;
  auto l = leases_.find(w.lease_id);
  if (l == leases_.end()) return;
  Lease& lease = l->second;
  ResourcePool* pool = PoolOf(lease);
  if (pool == nullptr) return;
  if (blocked && !lease.blocked) {
    lease.blocked = true;
    lease.lent = lease.alloc.amounts.Only(kCpu);
    pool->Lend(lease.lent);
    Schedule();  // its CPUs, and its place under the worker cap, may run what it waits for
  } else if (!blocked && lease.blocked) {
    lease.blocked = false;
    pool->Reclaim(lease.lent);  // back, even if that overcommits the node for a while
    lease.lent = ResourceSet();
  }
}

void LeaseManager::WorkerRemoved(const WorkerPool::Worker& w) {
  if (w.lease_id == 0) return;
  auto l = leases_.find(w.lease_id);
  if (l == leases_.end()) return;
  Release(l->second);
  if (l->second.holder != nullptr) {
    // Its holder will give it back once it notices; that return is expected.
    dropped_.insert(w.lease_id);
    dropped_order_.push_back(w.lease_id);
    while (dropped_order_.size() > 10000) {
      dropped_.erase(dropped_order_.front());
      dropped_order_.pop_front();
    }
  }
  leases_.erase(l);
}

std::vector<WorkerId> LeaseManager::WorkersHeldBy(const rpc::Connection* holder) const {
  std::vector<WorkerId> out;
  for (const auto& [lid, lease] : leases_) {
    if (lease.holder == holder) out.push_back(lease.worker);
  }
  return out;
}

std::vector<WorkerId> LeaseManager::WorkersInGroup(uint64_t group) const {
  std::vector<WorkerId> out;
  for (const auto& [lid, lease] : leases_) {
    if (lease.group == group) out.push_back(lease.worker);
  }
  return out;
}

bool LeaseManager::IsBlocked(const WorkerPool::Worker& w) const {
  if (w.lease_id == 0) return false;
  auto it = leases_.find(w.lease_id);
  // Only a wait that lent CPUs back frees a place under the cap: tasks that hold no CPU are not
  // bounded by the node's CPUs, so they stay bounded by the cap.
  return it != leases_.end() && it->second.blocked && !it->second.lent.empty();
}

ResourcePool* LeaseManager::PoolOf(const Lease& lease) {
  if (lease.group == 0) return &node_pool_;
  PlacementGroupRecord* g = groups_.Find(lease.group);
  if (g == nullptr || g->state != rpc::PG_CREATED) return nullptr;
  return &g->pools.at(static_cast<size_t>(lease.bundle));
}

void LeaseManager::Release(const Lease& lease) {
  ResourcePool* pool = PoolOf(lease);
  if (pool == nullptr) return;  // its group was removed: the group gave everything back
  pool->Free(lease.alloc);
  pool->Reclaim(lease.lent);  // already back
}

void LeaseManager::Schedule() {
  if (stopped_) return;
  host_.ReserveGroups();
  // Requests that fit but have no idle worker yet, by job and environment.
  std::map<std::pair<JobId, std::string>, Want> wanting;
  ResourceSet promised;  // to the workers this pass starts
  for (auto it = pending_.begin(); it != pending_.end();) {
    LeaseRequest& req = *it;
    if (req.actor.IsNil() ? req.from->closed() : !host_.ActorWaits(req.actor)) {
      it = pending_.erase(it);
      continue;
    }
    auto reject = [&](rpc::ErrorKind kind, const std::string& why) {
      if (!req.actor.IsNil()) {
        host_.ActorUnplaceable(req.actor, why);
      } else {
        Reject(*req.from, req.request_id, kind, why);
      }
    };
    PlacementGroupRecord* group = nullptr;
    if (req.placement.placement_group() != 0) {
      group = groups_.Find(req.placement.placement_group());
      if (group == nullptr) {
        reject(rpc::ERROR_INFEASIBLE, "placement group " +
                                          std::to_string(req.placement.placement_group()) +
                                          " does not exist (it was removed, or never created)");
        it = pending_.erase(it);
        continue;
      }
    }
    if (group == nullptr && !req.actor.IsNil()) {
      if (std::string why = ActorElsewhere(req); !why.empty()) {
        host_.ActorUnplaceable(req.actor, why);
        it = pending_.erase(it);
        continue;
      }
    }
    if (group == nullptr && req.actor.IsNil()) {
      bool waits = false;
      if (!PlaceInCluster(req, promised, &waits)) {
        it = pending_.erase(it);
        continue;
      }
      if (waits) {
        ++it;
        continue;
      }
    }
    if (group == nullptr && !node_pool_.CanEverFit(req.shape)) {
      if (config_.fixed_size) {
        reject(rpc::ERROR_INFEASIBLE, "no node can ever run this task: it needs {" +
                                          req.shape.ToString() + "} and the cluster has {" +
                                          config_.resources.ToString() + "}");
        it = pending_.erase(it);
        continue;
      }
      TellQueued(req, /*infeasible=*/true);  // a standalone cluster may grow: it waits
      ++it;
      continue;
    }
    WorkerPool::Job* job = workers_.FindJob(req.job);
    if (job == nullptr || (job->ended && req.actor.IsNil())) {
      reject(rpc::ERROR_SYSTEM, "job " + std::to_string(JobIdToInt(req.job)) + " has ended");
      it = pending_.erase(it);
      continue;
    }
    if (job->start_failures >= workers_.max_start_failures()) {
      reject(rpc::ERROR_SYSTEM, "workers for this job fail to start: " + job->last_start_failure);
      it = pending_.erase(it);
      continue;
    }
    std::optional<Allocation> alloc;
    int bundle = -1;
    if (group != nullptr) {
      if (group->state != rpc::PG_CREATED) {
        TellQueued(req);  // the group waits for its resources
        ++it;
        continue;
      }
      std::string error;
      alloc = PlacementGroups::Allocate(req.shape, req.placement, *group, &bundle, &error);
      if (!error.empty()) {
        reject(rpc::ERROR_INFEASIBLE, error);
        it = pending_.erase(it);
        continue;
      }
    } else {
      alloc = node_pool_.Allocate(req.shape, req.placement.strategy() == rpc::STRATEGY_SPREAD
                                                 ? DevicePolicy::kSpread
                                                 : DevicePolicy::kPack);
    }
    if (!alloc) {
      TellQueued(req);
      ++it;
      continue;
    }
    ResourcePool& pool = group != nullptr ? group->pools[static_cast<size_t>(bundle)] : node_pool_;
    // A worker is bound to its GPUs when it starts (CUDA_VISIBLE_DEVICES): a lease on GPUs needs
    // one started for exactly those.
    std::vector<int> gpus = alloc->Indices(kGpu);
    std::string worker_key = req.env_key;
    if (!gpus.empty()) {
      worker_key += std::string(1, '\1') + "gpus=";
      for (int g : gpus) worker_key += std::to_string(g) + ",";
    }
    WorkerPool::Worker* idle = workers_.FindIdle(req.job, worker_key);
    if (idle == nullptr) {
      pool.Free(*alloc);  // it fits: a worker is started for it below
      if (group == nullptr) promised.Add(req.shape);
      req.starting_here = true;
      req.starting_key = worker_key;
      if (group != nullptr && req.placement.strategy() == rpc::STRATEGY_SPREAD)
        group->next_bundle = bundle;
      Want& want = wanting[{req.job, worker_key}];
      want.count++;
      want.env = req.env;
      want.runtime = req.runtime;
      want.gpus = gpus;
      ++it;
      continue;
    }
    uint64_t lease_id = next_id_++;
    leases_[lease_id] = Lease{lease_id,      idle->id, req.from.get(),
                              ResourceSet(), *alloc,   group != nullptr ? group->id : 0,
                              bundle};
    idle->state = WorkerState::kLeased;
    idle->lease_id = lease_id;
    granted_total_++;
    if (!req.actor.IsNil()) {
      host_.ActorPlaced(req.actor, *idle, lease_id, *alloc);
      it = pending_.erase(it);
      continue;
    }
    rpc::Envelope env;
    auto* g = env.mutable_lease_grant();
    g->set_request_id(req.request_id);
    g->set_lease_id(lease_id);
    g->mutable_worker()->set_socket_path(idle->socket_path);
    g->mutable_worker()->set_worker_id(idle->id.Binary());
    g->mutable_worker()->set_node_id(node_.Binary());
    g->mutable_worker()->set_node_address(node_address_);
    for (const DeviceShare& d : alloc->devices) {
      auto* out = g->add_devices();
      out->set_resource(d.resource);
      out->set_index(d.index);
      out->set_milli(d.milli);
    }
    req.from->Send(env);
    it = pending_.erase(it);
  }
  int failures = 0;
  if (!StartWanted(wanting, &failures)) {
    if (failures >= workers_.max_start_failures()) {
      Schedule();  // its requests fail now (the failures count, so this ends)
    } else {
      // A transient failure (fork short of memory) may pass: try again after 100, 200, ... ms.
      host_.ScheduleAfter(
          std::chrono::milliseconds(100L << std::min(std::max(failures - 1, 0), 6)));
    }
  }
}

namespace {

// `amounts` less `shape`, never below zero.
void Deduct(google::protobuf::RepeatedPtrField<rpc::ResourceAmount>* amounts,
            const ResourceSet& shape) {
  for (auto& a : *amounts) a.set_milli(std::max<int64_t>(0, a.milli() - shape.Get(a.name())));
}

}  // namespace

std::string LeaseManager::ActorElsewhere(const LeaseRequest& req) {
  const rpc::Placement& p = req.placement;
  if (p.node_id().empty() && p.label_selector().empty()) return "";
  const rpc::NodeInfo& self = host_.Cluster().self;
  const bool labels_ok = LabelsMatch(self.labels(), p.label_selector());
  const bool node_ok = p.node_id().empty() || p.node_id() == self.node_id() || p.soft();
  if (labels_ok && node_ok) return "";
  return "its node affinity or label selector rules out its creator's node, and this version "
         "places actors on their creator's node only";
}

void LeaseManager::RefreshNodes(const ClusterView& view) {
  view_nodes_ = view.nodes;
  debt_version_ = view.version;
  for (auto& n : view_nodes_) {
    auto d = debts_.find(n.node_id());
    if (d == debts_.end()) continue;
    if (n.state() != rpc::NODE_ALIVE || n.reports() >= d->second.reports + 2) {
      debts_.erase(d);  // its reports count what it granted since
      continue;
    }
    Deduct(n.mutable_available(), d->second.sent);
  }
}

ResourceSet LeaseManager::promised_to_starting() const {
  ResourceSet out;
  for (const LeaseRequest& r : pending_) {
    if (r.starting_here && workers_.Starting(r.job, r.starting_key) > 0) out.Add(r.shape);
  }
  return out;
}

bool LeaseManager::PlaceInCluster(LeaseRequest& req, const ResourceSet& promised, bool* waits) {
  if (req.starting_here && workers_.Starting(req.job, req.starting_key) > 0) return true;
  req.starting_here = false;
  const ClusterView* v = &host_.Cluster();
  const rpc::Placement& p = req.placement;
  // This node alone, and nothing asks for a node: as on a single machine (unless this node
  // cannot serve it: then look again, a node may have joined since the last look).
  if (!v->others && p.node_id().empty() && p.label_selector().empty()) {
    ResourceSet after = promised;
    after.Add(req.shape);
    if (after.IsSubsetOf(node_pool_.available()) &&
        policy_.WithinThreshold(req.shape, node_pool_.total(), node_pool_.available(), promised))
      return true;
    v = &host_.FreshCluster();
    if (!v->others) return true;
  }
  const ClusterView& view = *v;
  if (view.version != debt_version_ || view_nodes_.empty()) RefreshNodes(view);
  rpc::NodeInfo self = view.self;
  self.clear_available();
  for (const auto& [name, total] : node_pool_.total().milli()) {
    auto* a = self.add_available();
    a->set_name(name);
    a->set_milli(std::max<int64_t>(0, node_pool_.available().Get(name) - promised.Get(name)));
  }
  PolicyDecision d = policy_.Decide(PolicyRequest{req.shape, &p, req.spilled}, self, view_nodes_);
  if (d.kind == PolicyDecision::kInfeasible) {
    const ClusterView& fresh = host_.FreshCluster();
    if (fresh.version != debt_version_) {
      RefreshNodes(fresh);
      d = policy_.Decide(PolicyRequest{req.shape, &p, req.spilled}, self, view_nodes_);
    }
  }
  PRISM_LOG_DEBUG("lease request {} ({}): {}", req.request_id, req.shape.ToString(),
                  d.kind == PolicyDecision::kLocal ? std::string("here")
                  : d.kind == PolicyDecision::kSpill
                      ? "to " + d.target.ip() + ":" + std::to_string(d.target.port())
                      : "nowhere: " + d.why);
  switch (d.kind) {
    case PolicyDecision::kLocal:
      return true;
    case PolicyDecision::kSpill: {
      spilled_total_++;
      for (auto& n : view_nodes_) {
        if (n.node_id() != d.target.node_id()) continue;
        Deduct(n.mutable_available(), req.shape);
        Debt& debt = debts_[n.node_id()];
        debt.sent.Add(req.shape);
        debt.reports = n.reports();
      }
      if (req.from && !req.from->closed()) {
        rpc::Envelope env;
        auto* s = env.mutable_lease_spillback();
        s->set_request_id(req.request_id);
        s->mutable_daemon()->set_node_id(d.target.node_id());
        const std::string& ip = d.target.ip();
        s->mutable_daemon()->set_node_address(
            (ip.find(':') == std::string::npos ? ip : "[" + ip + "]") + ":" +
            std::to_string(d.target.port()));
        s->mutable_daemon()->set_socket_path("daemon.sock");
        req.from->Send(env);
      }
      return false;
    }
    case PolicyDecision::kInfeasible:
      if (config_.fixed_size || !d.may_change) {
        Reject(*req.from, req.request_id, rpc::ERROR_INFEASIBLE,
               "cannot place this task: " + d.why);
        return false;
      }
      TellQueued(req, /*infeasible=*/true);  // a standalone cluster may grow: it waits
      *waits = true;
      return true;
  }
  return true;
}

bool LeaseManager::StartWanted(std::map<std::pair<JobId, std::string>, Want>& wanting,
                               int* failures) {
  bool all_started = true;
  for (auto& [key, wanted] : wanting) {
    const JobId job_id = key.first;
    const std::string& env_key = key.second;
    int starting = workers_.Starting(job_id, env_key);
    WorkerPool::Job* job = workers_.FindJob(job_id);
    if (job == nullptr) continue;
    while (starting < wanted.count) {
      // Actors' processes do not count against the cap: they are not a pool to share. Nor do
      // workers blocked in Get/Wait: the tasks they wait for need workers of their own, or a
      // tree of tasks that wait on their children deadlocks once it is deeper than the cap.
      int pooled = 0;
      for (auto& [wid, w] : workers_.all()) pooled += w.actor.IsNil() && !IsBlocked(w) ? 1 : 0;
      if (pooled >= config_.max_workers) {
        // At the cap: make room by stopping an idle worker of another job (or environment), if
        // there is one.
        const WorkerPool::Worker* victim = nullptr;
        for (auto& [wid, w] : workers_.all()) {
          if ((w.job != job_id || w.env_key != env_key) && w.state == WorkerState::kIdle) {
            victim = &w;
            break;
          }
        }
        if (victim == nullptr) break;
        WorkerId vid = victim->id;
        // Removing it reschedules (the host's KillWorker schedules), which starts the worker
        // this job waits for; this pass is stale from here on.
        host_.KillWorker(vid, "making room for another job's workers");
        return true;
      }
      if (!workers_.Start(*job, wanted.env, env_key, wanted.runtime, wanted.gpus)) {
        all_started = false;
        *failures = std::max(*failures, job->start_failures);
        break;
      }
      ++starting;
    }
    if (starting < wanted.count) {
      // No worker can start now: these requests wait like ones short of resources.
      for (auto& req : pending_) {
        if (req.job == job_id) TellQueued(req);
      }
    }
  }
  return all_started;
}

}  // namespace prism

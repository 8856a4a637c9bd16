#include "control/placement_groups.h"

#include "base/logging.h"
#include "control/requests.h"

namespace prism {

namespace {

DevicePolicy PolicyOf(rpc::PlacementStrategy strategy) {
  return strategy == rpc::PLACEMENT_SPREAD ? DevicePolicy::kSpread : DevicePolicy::kPack;
}

// One node: bundles that must lie on different nodes cannot share it.
bool NeedsNodesApart(const PlacementGroupRecord& g) {
  return g.strategy == rpc::PLACEMENT_STRICT_SPREAD && g.bundles.size() > 1;
}

}  // namespace

PlacementGroups::PlacementGroups(ResourcePool& node_pool, std::string node_resources,
                                 bool has_gpu_topology)
    : node_pool_(node_pool),
      node_resources_(std::move(node_resources)),
      has_gpu_topology_(has_gpu_topology) {}

bool PlacementGroups::Feasible(const PlacementGroupRecord& g) const {
  if (NeedsNodesApart(g)) return false;
  ResourcePool empty = node_pool_.Fresh();
  return empty.AllocateAll(g.bundles, PolicyOf(g.strategy), g.require_nvlink).has_value();
}

Result<uint64_t> PlacementGroups::Add(const JobId& job, const rpc::CreatePlacementGroup& req,
                                      bool fixed_size) {
  if (req.bundles_size() == 0 || req.bundles_size() > 1000) {
    return Status::InvalidArgument("a placement group has 1 to 1000 bundles, not " +
                                   std::to_string(req.bundles_size()));
  }
  if (!rpc::PlacementStrategy_IsValid(req.strategy())) {
    return Status::InvalidArgument("unknown placement strategy " + std::to_string(req.strategy()));
  }
  if (!req.name().empty() && names_.count(req.name()) > 0) {
    return Status::AlreadyExists("a placement group named '" + req.name() + "' exists already");
  }
  PlacementGroupRecord g;
  g.job = job;
  g.name = req.name();
  g.strategy = req.strategy();
  g.require_nvlink = req.require_nvlink();
  g.detached = req.detached();
  for (int i = 0; i < req.bundles_size(); ++i) {
    auto shape = ShapeFromProto(req.bundles(i).resources());
    Status st = shape.ok() ? CheckRequestShape(*shape) : shape.status();
    if (st.ok() && shape->empty()) st = Status::InvalidArgument("it is empty");
    if (!st.ok())
      return Status::InvalidArgument("bundle " + std::to_string(i) + ": " + st.message());
    g.bundles.push_back(std::move(*shape));
  }
  if (fixed_size && !Feasible(g)) {
    std::string shape;
    for (const auto& b : g.bundles) shape += " {" + b.ToString() + "}";
    std::string why;
    if (NeedsNodesApart(g)) {
      why = " must each lie on a node of their own, and the cluster has one node";
    } else if (g.require_nvlink && node_pool_.Fresh().AllocateAll(g.bundles, DevicePolicy::kPack)) {
      why = " fit on the node's {" + node_resources_ +
            "}, but no set of its GPUs that large is all joined by NVLink" +
            (has_gpu_topology_ ? "" : " (the node has no GPU topology)");
    } else {
      why = " do not fit together on the node's {" + node_resources_ + "}";
    }
    return Status(StatusCode::kInfeasible,
                  "this placement group can never be created: its bundles" + shape + why);
  }
  g.id = next_id_++;
  const uint64_t id = g.id;
  if (!g.name.empty()) names_[g.name] = id;
  groups_[id] = std::move(g);
  return id;
}

void PlacementGroups::Reserve(const std::function<void(PlacementGroupRecord&)>& created) {
  for (auto& [gid, g] : groups_) {
    if (g.state != rpc::PG_PENDING || NeedsNodesApart(g)) continue;
    // All bundles or none; their GPUs chosen together, as one best-connected set.
    auto taken = node_pool_.AllocateAll(g.bundles, PolicyOf(g.strategy), g.require_nvlink);
    if (!taken) continue;
    g.reserved = std::move(*taken);
    g.pools.clear();
    for (const Allocation& a : g.reserved)
      g.pools.push_back(ResourcePool::FromAllocation(a, &node_pool_));
    g.state = rpc::PG_CREATED;
    PRISM_LOG_INFO("placement group {} created ({} bundles)", gid, g.bundles.size());
    created(g);
  }
}

PlacementGroupRecord* PlacementGroups::Find(uint64_t id) {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : &it->second;
}

PlacementGroupRecord* PlacementGroups::FindByName(const std::string& name) {
  auto it = names_.find(name);
  return it == names_.end() ? nullptr : Find(it->second);
}

std::optional<PlacementGroupRecord> PlacementGroups::Take(uint64_t id) {
  auto it = groups_.find(id);
  if (it == groups_.end()) return std::nullopt;
  PlacementGroupRecord g = std::move(it->second);
  groups_.erase(it);
  if (!g.name.empty()) names_.erase(g.name);
  return g;
}

std::optional<Allocation> PlacementGroups::Allocate(const ResourceSet& shape,
                                                    const rpc::Placement& placement,
                                                    PlacementGroupRecord& g, int* bundle,
                                                    std::string* error) {
  const int n = static_cast<int>(g.bundles.size());
  const int want = placement.bundle_index();
  const std::string group =
      "placement group " + std::to_string(g.id) + (g.name.empty() ? "" : " ('" + g.name + "')");
  if (want >= n) {
    *error = "bundle index " + std::to_string(want) + " is out of range: " + group + " has " +
             std::to_string(n) + " bundle(s)";
    return std::nullopt;
  }
  const bool spread = placement.strategy() == rpc::STRATEGY_SPREAD;
  std::vector<int> candidates;
  if (want >= 0) {
    candidates.push_back(want);
  } else {
    for (int k = 0; k < n; ++k) candidates.push_back(((spread ? g.next_bundle : 0) + k) % n);
  }
  bool ever = false;
  for (int i : candidates) ever |= g.pools[static_cast<size_t>(i)].CanEverFit(shape);
  if (!ever) {
    *error = "this needs {" + shape.ToString() + "}, more than " +
             (want >= 0 ? "bundle " + std::to_string(want) + " of " + group + " holds {" +
                              g.bundles[static_cast<size_t>(want)].ToString() + "}"
                        : "any bundle of " + group + " holds");
    return std::nullopt;
  }
  for (int i : candidates) {
    auto a = g.pools[static_cast<size_t>(i)].Allocate(
        shape, spread ? DevicePolicy::kSpread : DevicePolicy::kPack);
    if (a) {
      *bundle = i;
      if (spread) g.next_bundle = (i + 1) % n;
      return a;
    }
  }
  return std::nullopt;
}

void PlacementGroups::Fill(const PlacementGroupRecord& g, rpc::PlacementGroupInfo* info) {
  info->set_id(g.id);
  info->set_name(g.name);
  info->set_strategy(g.strategy);
  info->set_require_nvlink(g.require_nvlink);
  info->set_detached(g.detached);
  info->set_state(g.state);
  info->set_job_id(g.job.Binary());
  for (size_t i = 0; i < g.bundles.size(); ++i) {
    auto* b = info->add_bundles();
    for (const auto& [name, milli] : g.bundles[i].milli()) {
      auto* r = b->add_resources();
      r->set_name(name);
      r->set_milli(milli);
    }
    if (i < g.reserved.size()) {
      for (const DeviceShare& d : g.reserved[i].devices) {
        auto* out = b->add_devices();
        out->set_resource(d.resource);
        out->set_index(d.index);
        out->set_milli(d.milli);
      }
    }
  }
}

void PlacementGroups::Wait(PlacementGroupRecord& g, rpc::Connection& conn, uint64_t request_id,
                           std::chrono::milliseconds timeout, asio::io_context& io) {
  std::erase_if(g.waiters, [](const PlacementGroupRecord::Waiter& w) {
    auto c = w.conn.lock();
    if (c && !c->closed()) return false;
    w.timer->cancel();
    return true;
  });
  PlacementGroupRecord::Waiter w;
  w.conn = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
  w.request_id = request_id;
  w.timer = std::make_shared<asio::steady_timer>(io);
  w.timer->expires_after(timeout);
  w.timer->async_wait([this, gid = g.id, weak = w.conn, request_id](const asio::error_code& ec) {
    if (ec) return;
    PlacementGroupRecord* group = Find(gid);
    if (group == nullptr) return;
    auto c = weak.lock();
    std::erase_if(group->waiters, [&](const PlacementGroupRecord::Waiter& x) {
      return x.request_id == request_id && x.conn.lock() == c;
    });
    if (!c || c->closed()) return;
    rpc::Envelope env;
    Fill(*group, env.mutable_placement_group_info());
    env.mutable_placement_group_info()->set_request_id(request_id);
    c->Send(env);
  });
  g.waiters.push_back(std::move(w));
}

void PlacementGroups::AnswerWaiters(PlacementGroupRecord& g) {
  for (auto& w : g.waiters) {
    w.timer->cancel();
    auto c = w.conn.lock();
    if (!c || c->closed()) continue;
    rpc::Envelope env;
    Fill(g, env.mutable_placement_group_info());
    env.mutable_placement_group_info()->set_request_id(w.request_id);
    c->Send(env);
  }
  g.waiters.clear();
}

void PlacementGroups::FailWaiters(PlacementGroupRecord& g, const Status& why) {
  for (auto& w : g.waiters) {
    w.timer->cancel();
    auto c = w.conn.lock();
    if (c && !c->closed()) rpc::SendErrorFrame(*c, w.request_id, why);
  }
  g.waiters.clear();
}

}  // namespace prism

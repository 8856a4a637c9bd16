#include "node/cluster_policy.h"

#include <algorithm>

#include "base/ids.h"

namespace prism {
namespace {

ResourceSet SetOf(const google::protobuf::RepeatedPtrField<rpc::ResourceAmount>& amounts) {
  std::map<std::string, int64_t> milli;
  for (const auto& a : amounts) milli[a.name()] = a.milli();
  auto set = ResourceSet::FromMilli(milli);
  return set.ok() ? *set : ResourceSet();
}

struct Candidate {
  const rpc::NodeInfo* node;
  bool self;
  ResourceSet total, available;
};

// With `shape` placed on a node of `total` that has `free` less `promised`, the most used of the
// resources it asks for, as a fraction.
double UsedAfter(const ResourceSet& shape, const ResourceSet& total, const ResourceSet& free,
                 const ResourceSet& promised = {}) {
  double worst = 0;
  for (const auto& [name, want] : shape.milli()) {
    const int64_t t = total.Get(name);
    if (t <= 0 || want <= 0) continue;
    const int64_t used = t - free.Get(name) + promised.Get(name) + want;
    worst = std::max(worst, static_cast<double>(used) / static_cast<double>(t));
  }
  return worst;
}
double UsedAfter(const Candidate& c, const ResourceSet& shape) {
  return UsedAfter(shape, c.total, c.available);
}

}  // namespace

bool ClusterPolicy::WithinThreshold(const ResourceSet& shape, const ResourceSet& total,
                                    const ResourceSet& free, const ResourceSet& promised) const {
  return UsedAfter(shape, total, free, promised) <= config_.spread_threshold;
}

PolicyDecision ClusterPolicy::Decide(const PolicyRequest& req, const rpc::NodeInfo& self,
                                     const std::vector<rpc::NodeInfo>& nodes) {
  const rpc::Placement& placement = *req.placement;
  std::vector<Candidate> all;
  all.push_back(Candidate{&self, true, SetOf(self.total()), SetOf(self.available())});
  for (const rpc::NodeInfo& n : nodes) {
    if (n.node_id() == self.node_id() || n.state() != rpc::NODE_ALIVE || n.port() <= 0) continue;
    all.push_back(Candidate{&n, false, SetOf(n.total()), SetOf(n.available())});
  }
  std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    return a.node->node_id() < b.node->node_id();
  });
  auto decide = [&](const Candidate& c) {
    PolicyDecision d;
    d.kind = c.self ? PolicyDecision::kLocal : PolicyDecision::kSpill;
    if (!c.self) d.target = *c.node;
    return d;
  };
  auto fits_ever = [&](const Candidate& c) { return req.shape.IsSubsetOf(c.total); };
  auto fits_now = [&](const Candidate& c) { return req.shape.IsSubsetOf(c.available); };
  const bool labelled = !placement.label_selector().empty();
  auto hex = [](const std::string& id) {
    return NodeId::IsValidBinary(id) ? NodeId::FromBinary(id).Hex() : std::string("(malformed)");
  };

  // Sent here by another node, which chose this one with the affinity and labels in mind: served
  // here (the sender's view of the cluster may be newer or older than this node's; the request
  // must not travel on).
  if (req.spilled) {
    PolicyDecision d;
    d.kind = PolicyDecision::kLocal;
    return d;
  }

  if (!placement.node_id().empty()) {
    for (const Candidate& c : all) {
      if (c.node->node_id() != placement.node_id()) continue;
      if (fits_ever(c) && LabelsMatch(c.node->labels(), placement.label_selector()))
        return decide(c);
      if (!placement.soft()) {
        PolicyDecision d;
        d.kind = PolicyDecision::kInfeasible;
        d.why = "node " + hex(c.node->node_id()) + " can never run it: it needs {" +
                req.shape.ToString() + "} and the node has {" + c.total.ToString() + "}" +
                (labelled ? " (or its labels do not match the selector)" : "");
        d.may_change = false;
        return d;
      }
    }
    if (!placement.soft()) {
      PolicyDecision d;
      d.kind = PolicyDecision::kInfeasible;
      d.why = "node " + hex(placement.node_id()) +
              " (its node affinity, soft=false) is not a live node of this cluster";
      d.may_change = false;
      return d;
    }
  }

  std::vector<const Candidate*> feasible;
  for (const Candidate& c : all) {
    if (fits_ever(c) && LabelsMatch(c.node->labels(), placement.label_selector()))
      feasible.push_back(&c);
  }
  if (feasible.empty()) {
    PolicyDecision d;
    d.kind = PolicyDecision::kInfeasible;
    d.why = "no node can ever run it: it needs {" + req.shape.ToString() + "}" +
            (labelled ? " on a node whose labels match its selector" : "") + ", and of the " +
            std::to_string(all.size()) + " live node(s) none has that";
    return d;
  }
  const Candidate* here = nullptr;
  for (const Candidate* c : feasible) {
    if (c->self) here = c;
  }

  if (placement.strategy() == rpc::STRATEGY_SPREAD) {
    const size_t n = feasible.size();
    const size_t start = spread_next_ % n;
    for (size_t i = 0; i < n; ++i) {
      const Candidate* c = feasible[(start + i) % n];
      if (!fits_now(*c)) continue;
      spread_next_ = start + i + 1;
      return decide(*c);
    }
    spread_next_ = start + 1;
    return decide(*feasible[start]);
  }

  // The default: pack here up to the threshold, then the least used node that has room.
  if (here != nullptr && fits_now(*here) &&
      UsedAfter(*here, req.shape) <= config_.spread_threshold) {
    return decide(*here);
  }
  const Candidate* best = nullptr;
  double best_used = 0;
  for (const Candidate* c : feasible) {
    if (!fits_now(*c)) continue;
    double used = UsedAfter(*c, req.shape);
    // (This node wins ties: it sorts anywhere, so compare it explicitly.)
    if (best == nullptr || used < best_used || (used == best_used && c->self)) {
      best = c;
      best_used = used;
    }
  }
  if (best != nullptr) return decide(*best);
  // Nowhere has room now: wait here when this node could run it, else where it could.
  if (here != nullptr) return decide(*here);
  return decide(*feasible.front());
}

}  // namespace prism

// Which node of the cluster serves a lease request: this one, or another it spills to. A pure
// function of the request and the cluster's nodes as this node last heard of them (their free
// resources up to a heartbeat old; this node's own are exact), so it is tested on its own.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/labels.h"
#include "base/resources.h"
#include "prism.pb.h"

namespace prism {

struct ClusterPolicyConfig {
  /// The default policy packs onto this node while, with the request placed, none of the
  /// resources it asks for is used beyond this fraction; past it, the request goes to the node
  /// least used (this one where it ties). Ray's hybrid policy, with its default.
  double spread_threshold = 0.5;
};

/// What a request is, as the policy sees it.
struct PolicyRequest {
  ResourceSet shape;
  const rpc::Placement* placement = nullptr;  // strategy, affinity, labels (never null)
  /// Sent here by another node (which chose this one): served here.
  bool spilled = false;
};

struct PolicyDecision {
  enum Kind {
    kLocal,       // this node (now, or queued here until it has room)
    kSpill,       // another node: `target`
    kInfeasible,  // no live node can ever serve it (`why`)
  };
  Kind kind = kLocal;
  rpc::NodeInfo target;
  std::string why;
  /// kInfeasible: a node that joins later might serve it (false: a hard affinity to a node that
  /// is gone, which never comes back under its id).
  bool may_change = true;
};

/// The cluster as a node's scheduler sees it: refreshed with each heartbeat's answer.
struct ClusterView {
  uint64_t version = 0;
  rpc::NodeInfo self;                // id, totals, labels (free resources filled in per decision)
  std::vector<rpc::NodeInfo> nodes;  // every node as last heard (this one's entry included)
  bool others = false;               // another live node with a cluster port is among them
};

class ClusterPolicy {
 public:
  explicit ClusterPolicy(ClusterPolicyConfig config = {}) : config_(config) {}

  /// `self`: this node's entry (its free resources exact); `nodes`: the cluster's (this node's
  /// own entry among them is ignored; dead nodes and nodes without a cluster port are skipped).
  PolicyDecision Decide(const PolicyRequest& req, const rpc::NodeInfo& self,
                        const std::vector<rpc::NodeInfo>& nodes);
  /// Whether, with `shape` placed on a node of `total` with `free` less `promised`, none of the
  /// resources it asks for is used beyond the spread threshold (the default packs there).
  bool WithinThreshold(const ResourceSet& shape, const ResourceSet& total, const ResourceSet& free,
                       const ResourceSet& promised) const;

 private:
  ClusterPolicyConfig config_;
  size_t spread_next_ = 0;  // SPREAD: where the next request's turn starts
};

}  // namespace prism

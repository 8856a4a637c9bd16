// The placement-group manager: the groups of the cluster, their names, and their reservations.
// One node today: a group is created by taking all its bundles from the node's pool at once (or
// none), and a lease placed into a group draws from its bundles' pools. The daemon answers the
// requests (and ends what ran in a removed group); this holds the state and the rules.
#pragma once

#include <prism/ids.h>

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/resources.h"
#include "base/status.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

struct PlacementGroupRecord {
  uint64_t id = 0;
  JobId job;
  std::string name;
  rpc::PlacementStrategy strategy = rpc::PLACEMENT_PACK;
  std::vector<ResourceSet> bundles;
  bool require_nvlink = false;  // the group's GPUs must all be joined by NVLink
  bool detached = false;        // outlives its job
  rpc::PlacementGroupState state = rpc::PG_PENDING;
  std::vector<Allocation> reserved;  // from the node's pool, one per bundle, once created
  std::vector<ResourcePool> pools;   // what each bundle has left for leases
  int next_bundle = 0;               // where a SPREAD lease for any bundle looks first
  struct Waiter {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id = 0;
    std::shared_ptr<asio::steady_timer> timer;  // answers PENDING when it fires
  };
  std::vector<Waiter> waiters;  // WAIT requests
};

/// On the daemon's event loop.
class PlacementGroups {
 public:
  /// What a node offers to groups: its pool, and for error messages its resources and whether it
  /// knows its GPUs' topology.
  PlacementGroups(ResourcePool& node_pool, std::string node_resources, bool has_gpu_topology);

  /// Checks a request and adds its group, pending, for `job`: its id, or why not (bad bundles or
  /// strategy, a name taken, or, on a node of fixed size, bundles that can never fit together).
  Result<uint64_t> Add(const JobId& job, const rpc::CreatePlacementGroup& req, bool fixed_size);
  /// Reserves the bundles of pending groups where the node has room for all of a group's (their
  /// GPUs chosen together, as one best-connected set); `created(group)` runs for each.
  void Reserve(const std::function<void(PlacementGroupRecord&)>& created);
  /// Whether the group's bundles fit together on an empty node.
  bool Feasible(const PlacementGroupRecord& g) const;
  PlacementGroupRecord* Find(uint64_t id);
  PlacementGroupRecord* FindByName(const std::string& name);
  /// Takes a group out of the tables (null if there is none). Its reservation goes with it: the
  /// caller gives it back to the node once nothing uses it.
  std::optional<PlacementGroupRecord> Take(uint64_t id);
  std::map<uint64_t, PlacementGroupRecord>& all() { return groups_; }
  const std::map<uint64_t, PlacementGroupRecord>& all() const { return groups_; }

  /// For a request of `shape` placed into `g`: an allocation from a bundle that fits now, or
  /// nothing. Sets `*error` when it can never run there (no such bundle, or none large enough).
  static std::optional<Allocation> Allocate(const ResourceSet& shape,
                                            const rpc::Placement& placement,
                                            PlacementGroupRecord& g, int* bundle,
                                            std::string* error);
  static void Fill(const PlacementGroupRecord& g, rpc::PlacementGroupInfo* info);

  /// Answers request `request_id` on `conn` with the group's info once it is created, or as it
  /// is (PENDING) after `timeout`. Waiters whose connections closed are dropped now.
  void Wait(PlacementGroupRecord& g, rpc::Connection& conn, uint64_t request_id,
            std::chrono::milliseconds timeout, asio::io_context& io);
  /// Answers every waiter of `g` with its info now.
  static void AnswerWaiters(PlacementGroupRecord& g);
  /// Answers every waiter of `g` with `why` (the group went before it was created).
  static void FailWaiters(PlacementGroupRecord& g, const Status& why);

 private:
  ResourcePool& node_pool_;
  std::string node_resources_;
  bool has_gpu_topology_;
  std::map<uint64_t, PlacementGroupRecord> groups_;
  std::map<std::string, uint64_t> names_;
  uint64_t next_id_ = 1;
};

}  // namespace prism

// Resource amounts (CPU, custom names) in fixed point, so that fractions add up exactly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/device_placement.h"
#include "base/status.h"

namespace prism {

inline constexpr int64_t kMilli = 1000;
inline constexpr char kCpu[] = "CPU";
/// Bytes of memory, a resource like any other: tasks and actors that say how much they need are
/// placed only where that much is unreserved.
inline constexpr char kMemory[] = "memory";

/// A set of named non-negative amounts, in thousandths of a unit. Zero entries are dropped.
class ResourceSet {
 public:
  ResourceSet() = default;
  /// Rejects negative, non-finite or absurd amounts and empty names.
  static Result<ResourceSet> FromUnits(const std::map<std::string, double>& units);
  static Result<ResourceSet> FromMilli(const std::map<std::string, int64_t>& milli);

  const std::map<std::string, int64_t>& milli() const { return milli_; }
  int64_t Get(const std::string& name) const;
  bool empty() const { return milli_.empty(); }
  /// Every amount here is <= the same amount in `other`.
  bool IsSubsetOf(const ResourceSet& other) const;
  void Add(const ResourceSet& other);
  void Subtract(const ResourceSet& other);  // caller checked IsSubsetOf
  /// Subtracts even below zero (a worker that unblocks takes its CPU back on a full node).
  void Overdraw(const ResourceSet& other);
  /// Only the entry `name` (empty if absent).
  ResourceSet Only(const std::string& name) const;
  /// "CPU=1,gpu=0.5": a stable text form, used as a scheduling key and in messages.
  std::string ToString() const;
  bool operator==(const ResourceSet& o) const { return milli_ == o.milli_; }

 private:
  std::map<std::string, int64_t> milli_;
};

/// GPUs: a device resource. A node's N GPUs are N instances of one unit each; a request for less
/// than one shares an instance with others, a request for k >= 1 takes k whole instances.
inline constexpr char kGpu[] = "GPU";

/// Whether `name` is counted per device instance (today: GPU).
bool IsDeviceResource(const std::string& name);

/// Checks the amounts a task may ask for: a device resource above one unit must be whole.
Status CheckRequestShape(const ResourceSet& shape);

/// A share of one device instance held by a lease or a placement-group bundle.
struct DeviceShare {
  std::string resource;
  int index = 0;
  int64_t milli = 0;
  bool operator==(const DeviceShare& o) const {
    return resource == o.resource && index == o.index && milli == o.milli;
  }
};

/// What a grant took from a pool: the amounts, and for device resources which instances.
struct Allocation {
  ResourceSet amounts;
  std::vector<DeviceShare> devices;
  /// The instances of `resource` it holds, in order.
  std::vector<int> Indices(const std::string& resource) const;
};

/// How a pool picks device instances for fractional requests: kPack fills the fullest instance
/// that fits (whole instances stay free for whole requests), kSpread the emptiest.
enum class DevicePolicy { kPack, kSpread };

/// The resources of a node or of a placement-group bundle: scalar amounts, and device resources
/// as vectors of instances with free thousandths each.
class ResourcePool {
 public:
  ResourcePool() = default;
  /// A node's pool. Device resources must come in whole units (instances 0..N-1).
  static Result<ResourcePool> Create(const ResourceSet& totals);
  /// A bundle's pool: exactly what `alloc` took, on the same device instances, placed by the
  /// device graphs of `node` (the pool it was taken from) if given.
  static ResourcePool FromAllocation(const Allocation& alloc, const ResourcePool* node = nullptr);
  /// The same pool with everything free.
  ResourcePool Fresh() const;

  /// How the instances of `resource` are connected: from then on, requests for several take the
  /// best-connected free set (device_placement.h). Without a graph, the lowest free indices.
  Status SetDeviceGraph(const std::string& resource, DeviceGraph graph);
  const DeviceGraph* device_graph(const std::string& resource) const;

  const ResourceSet& total() const { return total_; }
  const ResourceSet& available() const { return available_; }
  /// Free thousandths per instance of a device resource (empty if the pool has none).
  const std::map<int, int64_t>& Instances(const std::string& resource) const;
  const std::map<std::string, std::map<int, int64_t>>& instances() const { return free_; }

  /// Whether `shape` fits once everything in the pool is free.
  bool CanEverFit(const ResourceSet& shape) const;
  /// Takes `shape` if it fits now.
  std::optional<Allocation> Allocate(const ResourceSet& shape,
                                     DevicePolicy policy = DevicePolicy::kPack);
  /// Takes every shape or none (a placement group's bundles). The whole devices of all shapes
  /// are chosen together as one best-connected set; with `require_nvlink`, one whose devices are
  /// all joined by NVLink.
  std::optional<std::vector<Allocation>> AllocateAll(const std::vector<ResourceSet>& shapes,
                                                     DevicePolicy policy,
                                                     bool require_nvlink = false);
  /// Gives back what Allocate took.
  void Free(const Allocation& alloc);
  /// Scalar amounts lent (a blocked worker's CPUs) or taken back, even below zero.
  void Lend(const ResourceSet& scalar) { available_.Add(scalar); }
  void Reclaim(const ResourceSet& scalar) { available_.Overdraw(scalar); }

 private:
  /// Picks instances for `milli` of `resource` from `free`, only among `allowed` if given.
  std::optional<std::vector<DeviceShare>> Pick(const std::string& resource,
                                               const std::map<int, int64_t>& free, int64_t milli,
                                               DevicePolicy policy,
                                               const std::vector<int>* allowed = nullptr,
                                               bool require_nvlink = false) const;
  std::optional<Allocation> AllocateWithin(const ResourceSet& shape, DevicePolicy policy,
                                           const std::map<std::string, std::vector<int>>& allowed);

  ResourceSet total_;
  ResourceSet available_;
  std::map<std::string, std::map<int, int64_t>> capacity_;  // per instance, when all is free
  std::map<std::string, std::map<int, int64_t>> free_;
  std::map<std::string, DeviceGraph> graphs_;
};

}  // namespace prism

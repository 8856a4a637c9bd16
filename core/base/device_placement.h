// Choosing which devices of a node a request gets, by how they are connected. The scheduler's
// per-device resource vectors say which devices are free; a DeviceGraph (from the GPU topology)
// says how fast each pair talks. A k-device request gets the set that is best connected, and among
// equally good sets the one that leaves the rest of the node best connected for later requests.
#pragma once

#include <optional>
#include <vector>

namespace prism {

/// Pairwise link quality of a node's devices (instances 0..N-1).
struct DeviceGraph {
  std::vector<std::vector<double>> bandwidth;  // GB/s, [a][b]
  std::vector<std::vector<bool>> nvlink;       // [a][b]: joined by NVLink/NVSwitch
  int size() const { return static_cast<int>(bandwidth.size()); }
};

/// How good a device set is, compared lexicographically (greater is better): the slowest link
/// inside the set (what a ring collective runs at), the sum of its links, then the sum of the
/// links among the free devices it leaves (so that later requests still find good sets).
struct PlacementQuality {
  double min_link = 0;
  double sum_links = 0;
  double leftover_links = 0;
  bool operator<(const PlacementQuality& o) const;
  bool operator==(const PlacementQuality& o) const;
};

/// The quality of taking `chosen` out of `free` (chosen is a subset of free).
PlacementQuality QualityOf(const DeviceGraph& graph, const std::vector<int>& chosen,
                           const std::vector<int>& free);

/// The best `k` devices of `free` (ascending), or nullopt if there are fewer than k, or, when
/// `require_nvlink`, no k of them are all joined by NVLink. Exhaustive up to 50,000 candidate
/// sets; beyond that, the best of greedy growths from every seed.
std::optional<std::vector<int>> BestDeviceSet(const DeviceGraph& graph,
                                              const std::vector<int>& free, int k,
                                              bool require_nvlink);

}  // namespace prism

#include "base/device_placement.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace prism {
namespace {

// Bandwidths come from profiles as decimals; treat values within a thousandth as equal.
bool Less(double a, double b) { return a < b - 1e-9 * std::max(1.0, std::fabs(b)); }

double Combinations(int n, int k) {
  double c = 1;
  for (int i = 1; i <= k; ++i) c = c * (n - k + i) / i;
  return c;
}

bool AllNvLinked(const DeviceGraph& g, const std::vector<int>& set) {
  for (size_t i = 0; i < set.size(); ++i)
    for (size_t j = i + 1; j < set.size(); ++j)
      if (!g.nvlink[set[i]][set[j]]) return false;
  return true;
}

}  // namespace

bool PlacementQuality::operator<(const PlacementQuality& o) const {
  if (Less(min_link, o.min_link)) return true;
  if (Less(o.min_link, min_link)) return false;
  if (Less(sum_links, o.sum_links)) return true;
  if (Less(o.sum_links, sum_links)) return false;
  return Less(leftover_links, o.leftover_links);
}

bool PlacementQuality::operator==(const PlacementQuality& o) const {
  return !(*this < o) && !(o < *this);
}

namespace {

// Scores sets out of one free list in O(k^2): the links among what a set leaves are the links
// among all free devices, less those touching the set.
class Scorer {
 public:
  Scorer(const DeviceGraph& g, const std::vector<int>& free) : g_(g) {
    row_.assign(g.size(), 0);
    for (size_t i = 0; i < free.size(); ++i) {
      for (size_t j = 0; j < free.size(); ++j) {
        if (i == j) continue;
        row_[free[i]] += g.bandwidth[free[i]][free[j]];
        if (i < j) total_ += g.bandwidth[free[i]][free[j]];
      }
    }
  }
  PlacementQuality operator()(const std::vector<int>& set) const {
    PlacementQuality q;
    q.min_link = set.size() < 2 ? std::numeric_limits<double>::infinity()
                                : std::numeric_limits<double>::max();
    double touching = 0;
    for (size_t i = 0; i < set.size(); ++i) {
      touching += row_[set[i]];
      for (size_t j = i + 1; j < set.size(); ++j) {
        double bw = g_.bandwidth[set[i]][set[j]];
        q.min_link = std::min(q.min_link, bw);
        q.sum_links += bw;
      }
    }
    q.leftover_links = total_ - (touching - q.sum_links);
    return q;
  }

 private:
  const DeviceGraph& g_;
  std::vector<double> row_;
  double total_ = 0;
};

}  // namespace

PlacementQuality QualityOf(const DeviceGraph& g, const std::vector<int>& chosen,
                           const std::vector<int>& free) {
  return Scorer(g, free)(chosen);
}

std::optional<std::vector<int>> BestDeviceSet(const DeviceGraph& g, const std::vector<int>& free_in,
                                              int k, bool require_nvlink) {
  std::vector<int> free = free_in;
  std::sort(free.begin(), free.end());
  const int n = static_cast<int>(free.size());
  if (k <= 0 || k > n) return std::nullopt;
  Scorer score(g, free);
  std::optional<std::vector<int>> best;
  PlacementQuality best_q;
  auto consider = [&](const std::vector<int>& set) {
    if (require_nvlink && !AllNvLinked(g, set)) return;
    PlacementQuality q = score(set);
    if (!best || best_q < q) {  // ties keep the first found: the lowest indices
      best = set;
      best_q = q;
    }
  };
  if (Combinations(n, k) <= 50000) {
    std::vector<int> pick(k);
    for (int i = 0; i < k; ++i) pick[i] = i;
    std::vector<int> set(k);
    for (;;) {
      for (int i = 0; i < k; ++i) set[i] = free[pick[i]];
      consider(set);
      int i = k - 1;
      while (i >= 0 && pick[i] == n - k + i) --i;
      if (i < 0) break;
      ++pick[i];
      for (int j = i + 1; j < k; ++j) pick[j] = pick[j - 1] + 1;
    }
    return best;
  }
  // Large nodes: grow a set from each seed (the first 64), adding the device that keeps it best
  // connected.
  Scorer inside(g, {});
  for (int s = 0; s < std::min(n, 64); ++s) {
    std::vector<int> set{free[s]};
    while (static_cast<int>(set.size()) < k) {
      int pick = -1;
      PlacementQuality pick_q;
      for (int c : free) {
        if (std::find(set.begin(), set.end(), c) != set.end()) continue;
        if (require_nvlink &&
            !std::all_of(set.begin(), set.end(), [&](int m) { return g.nvlink[m][c]; }))
          continue;
        set.push_back(c);
        PlacementQuality q = inside(set);
        set.pop_back();
        if (pick < 0 || pick_q < q) {
          pick = c;
          pick_q = q;
        }
      }
      if (pick < 0) break;
      set.push_back(pick);
    }
    if (static_cast<int>(set.size()) < k) continue;
    std::sort(set.begin(), set.end());
    consider(set);
  }
  return best;
}

}  // namespace prism

// Topology-aware GPU placement: on each shipped profile, every k-GPU placement is as good as the
// best an exhaustive search finds, and mixed request sequences never overcommit a device.
#include "base/device_placement.h"

#include <gtest/gtest.h>
#include <prism/gpu/topology.h>

#include <algorithm>
#include <random>
#include <set>

#include "base/resources.h"

namespace prism {
namespace {

DeviceGraph GraphOf(const gpu::Topology& t) { return {t.BandwidthMatrix(), t.NvLinkMatrix()}; }

ResourcePool NodePool(const gpu::Topology& t) {
  auto pool =
      ResourcePool::Create(*ResourceSet::FromUnits({{"CPU", 64}, {"GPU", double(t.gpu_count())}}));
  EXPECT_TRUE(pool.ok());
  EXPECT_TRUE(pool->SetDeviceGraph(kGpu, GraphOf(t)).ok());
  return std::move(*pool);
}

ResourceSet Gpus(double n) { return *ResourceSet::FromUnits({{"GPU", n}}); }

// The reference: every subset of the free devices, by bitmask, scored from the topology's own
// bandwidths (not from the DeviceGraph the scheduler was given).
struct Score {
  double min_link, sum, leftover;
};
bool Worse(const Score& a, const Score& b) {
  auto lt = [](double x, double y) { return x < y - 1e-9 * std::max(1.0, y); };
  if (lt(a.min_link, b.min_link)) return true;
  if (lt(b.min_link, a.min_link)) return false;
  if (lt(a.sum, b.sum)) return true;
  if (lt(b.sum, a.sum)) return false;
  return lt(a.leftover, b.leftover);
}
Score ScoreOf(const gpu::Topology& t, unsigned set, unsigned free) {
  Score s{1e300, 0, 0};
  int n = t.gpu_count();
  for (int a = 0; a < n; ++a) {
    for (int b = a + 1; b < n; ++b) {
      bool in_a = set >> a & 1, in_b = set >> b & 1;
      if (in_a && in_b) {
        s.min_link = std::min(s.min_link, t.Bandwidth(a, b));
        s.sum += t.Bandwidth(a, b);
      }
      if (!in_a && !in_b && (free >> a & 1) && (free >> b & 1)) s.leftover += t.Bandwidth(a, b);
    }
  }
  return s;
}
std::optional<Score> BestByExhaustiveSearch(const gpu::Topology& t, unsigned free, int k,
                                            bool nvlink) {
  std::optional<Score> best;
  for (unsigned set = 0; set < (1u << t.gpu_count()); ++set) {
    if ((set & ~free) != 0 || __builtin_popcount(set) != k) continue;
    bool ok = true;
    for (int a = 0; a < t.gpu_count() && nvlink; ++a)
      for (int b = a + 1; b < t.gpu_count(); ++b)
        if ((set >> a & 1) && (set >> b & 1) && t.Path(a, b) != gpu::PathKind::kNvLink) ok = false;
    if (!ok) continue;
    Score s = ScoreOf(t, set, free);
    if (!best || Worse(*best, s)) best = s;
  }
  return best;
}

unsigned FreeMask(const ResourcePool& pool) {
  unsigned m = 0;
  for (const auto& [index, free] : pool.Instances(kGpu))
    if (free == kMilli) m |= 1u << index;
  return m;
}

class PlacementOnProfile : public ::testing::TestWithParam<std::string> {};

TEST_P(PlacementOnProfile, EveryPlacementIsTheBestExhaustiveSearchFinds) {
  gpu::Topology t = *gpu::Topology::Load(GetParam());
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    ResourcePool pool = NodePool(t);
    // Some devices already taken, at random (by whole-GPU requests of random sizes).
    std::vector<Allocation> held;
    int pre = trial % 5;
    for (int i = 0; i < pre; ++i) {
      auto a = pool.Allocate(Gpus(1 + rng() % 2));
      if (a) held.push_back(*a);
    }
    unsigned free = FreeMask(pool);
    int k = 1 + static_cast<int>(rng() % t.gpu_count());
    auto want = BestByExhaustiveSearch(t, free, k, false);
    auto got = pool.Allocate(Gpus(k));
    ASSERT_EQ(got.has_value(), want.has_value()) << "k=" << k;
    if (!got) continue;
    unsigned set = 0;
    for (int i : got->Indices(kGpu)) set |= 1u << i;
    Score s = ScoreOf(t, set, free);
    EXPECT_FALSE(Worse(s, *want)) << GetParam() << ": k=" << k << " free=" << free << " got=" << set
                                  << " min " << s.min_link << " vs " << want->min_link << ", sum "
                                  << s.sum << " vs " << want->sum << ", leftover " << s.leftover
                                  << " vs " << want->leftover;
  }
}

TEST_P(PlacementOnProfile, NvLinkOnlyGroupsAreBestAmongNvLinkSets) {
  gpu::Topology t = *gpu::Topology::Load(GetParam());
  for (int k = 1; k <= t.gpu_count(); ++k) {
    ResourcePool pool = NodePool(t);
    unsigned free = FreeMask(pool);
    auto want = BestByExhaustiveSearch(t, free, k, true);
    auto got = pool.AllocateAll({Gpus(k)}, DevicePolicy::kPack, /*require_nvlink=*/true);
    ASSERT_EQ(got.has_value(), want.has_value()) << GetParam() << " k=" << k;
    if (!got) continue;
    unsigned set = 0;
    for (int i : (*got)[0].Indices(kGpu)) set |= 1u << i;
    EXPECT_FALSE(Worse(ScoreOf(t, set, free), *want)) << k;
  }
}

// Mixed requests: 1-GPU actors, an 8-GPU one, fractions of 0.25 and whole ones, coming and going.
// No device is ever given twice as a whole, and no fraction lands on a device taken whole.
TEST_P(PlacementOnProfile, MixedRequestsNeverOvercommitADevice) {
  gpu::Topology t = *gpu::Topology::Load(GetParam());
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    ResourcePool pool = NodePool(t);
    std::vector<Allocation> held;
    auto check = [&] {
      std::map<int, int64_t> used;
      std::map<int, int> whole;
      for (const Allocation& a : held) {
        for (const DeviceShare& d : a.devices) {
          used[d.index] += d.milli;
          if (d.milli == kMilli) whole[d.index]++;
        }
      }
      for (const auto& [index, milli] : used) {
        ASSERT_LE(milli, kMilli) << "device " << index << " overcommitted";
        if (whole[index] > 0) {
          ASSERT_EQ(milli, kMilli) << "a fraction on device " << index << " taken whole";
        }
      }
    };
    for (int i = 0; i < 3; ++i) {
      if (auto a = pool.Allocate(Gpus(1))) held.push_back(*a);
    }
    if (auto a = pool.Allocate(Gpus(t.gpu_count()))) {
      ADD_FAILURE() << "all " << t.gpu_count() << " GPUs granted while 3 are held";
      held.push_back(*a);
    }
    check();
    const double sizes[] = {0.25, 0.25, 0.5, 1, 1, 2, double(t.gpu_count())};
    for (int step = 0; step < 60; ++step) {
      if (!held.empty() && rng() % 3 == 0) {
        size_t victim = rng() % held.size();
        pool.Free(held[victim]);
        held.erase(held.begin() + static_cast<long>(victim));
      } else {
        double n = sizes[rng() % 7];
        if (auto a =
                pool.Allocate(Gpus(n), rng() % 2 ? DevicePolicy::kPack : DevicePolicy::kSpread)) {
          EXPECT_EQ(a->Indices(kGpu).size(), n < 1 ? 1u : static_cast<size_t>(n));
          held.push_back(*a);
        }
      }
      check();
    }
    for (const Allocation& a : held) pool.Free(a);
    EXPECT_EQ(FreeMask(pool), (1u << t.gpu_count()) - 1) << "everything given back";
  }
}

INSTANTIATE_TEST_SUITE_P(Profiles, PlacementOnProfile,
                         ::testing::Values("h100-sxm-8", "pcie-8-2numa", "nvlink-pairs-4"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(DevicePlacementTest, PairsStayWholeForLaterRequests) {
  gpu::Topology t = *gpu::Topology::Load("pcie-8-2numa");
  ResourcePool pool = NodePool(t);
  auto a = pool.Allocate(Gpus(1));
  auto b = pool.Allocate(Gpus(1));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(t.Path(a->Indices(kGpu)[0], b->Indices(kGpu)[0]), gpu::PathKind::kPix)
      << "the second single GPU is the first one's switch partner, so no other pair is broken";
  auto two = pool.Allocate(Gpus(2));
  ASSERT_TRUE(two);
  auto i = two->Indices(kGpu);
  EXPECT_EQ(t.Path(i[0], i[1]), gpu::PathKind::kPix) << "a 2-GPU task gets a switch pair";
  auto four = pool.Allocate(Gpus(4));
  ASSERT_TRUE(four);
  std::set<int> numa;
  for (int g : four->Indices(kGpu)) numa.insert(t.gpus()[g].numa_node);
  EXPECT_EQ(numa.size(), 1u) << "a 4-GPU task stays on one socket: the first 4 left it whole";
}

TEST(DevicePlacementTest, FractionsPackAndPickTheLeastHarmfulDevice) {
  gpu::Topology t = *gpu::Topology::Load("nvlink-pairs-4");
  ResourcePool pool = NodePool(t);
  auto whole = pool.Allocate(Gpus(1));  // takes one GPU of a pair
  auto frac = pool.Allocate(Gpus(0.25));
  ASSERT_TRUE(whole && frac);
  EXPECT_EQ(t.Path(whole->Indices(kGpu)[0], frac->Indices(kGpu)[0]), gpu::PathKind::kNvLink)
      << "the fraction goes to the broken pair, keeping the other pair whole";
  auto pair = pool.Allocate(Gpus(2));
  ASSERT_TRUE(pair);
  auto p = pair->Indices(kGpu);
  EXPECT_EQ(t.Path(p[0], p[1]), gpu::PathKind::kNvLink);
  auto frac2 = pool.Allocate(Gpus(0.5));
  ASSERT_TRUE(frac2);
  EXPECT_EQ(frac2->Indices(kGpu), frac->Indices(kGpu)) << "fractions pack onto the shared device";
}

TEST(DevicePlacementTest, GroupsChooseTheirGpusTogether) {
  gpu::Topology t = *gpu::Topology::Load("pcie-8-2numa");
  ResourcePool pool = NodePool(t);
  // Four 1-GPU bundles: together they fill one socket rather than straddling two.
  auto bundles = pool.AllocateAll({Gpus(1), Gpus(1), Gpus(1), Gpus(1)}, DevicePolicy::kPack);
  ASSERT_TRUE(bundles);
  std::set<int> numa;
  for (const auto& b : *bundles) numa.insert(t.gpus()[b.Indices(kGpu)[0]].numa_node);
  EXPECT_EQ(numa.size(), 1u);
  // No NVLink on this box: a 2-GPU NVLink group can never exist, a 1-GPU one can.
  EXPECT_FALSE(pool.Fresh().AllocateAll({Gpus(1), Gpus(1)}, DevicePolicy::kPack, true));
  EXPECT_TRUE(pool.Fresh().AllocateAll({Gpus(1)}, DevicePolicy::kPack, true));
  // A failed group takes nothing.
  auto before = pool.available();
  EXPECT_FALSE(pool.AllocateAll({Gpus(2), Gpus(4)}, DevicePolicy::kPack));
  EXPECT_EQ(pool.available(), before);
}

TEST(DevicePlacementTest, WithoutAGraphTheLowestFreeIndicesAndNoNvLink) {
  auto pool = ResourcePool::Create(Gpus(4));
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(pool->Allocate(Gpus(2))->Indices(kGpu), (std::vector<int>{0, 1}));
  EXPECT_FALSE(pool->Fresh().AllocateAll({Gpus(2)}, DevicePolicy::kPack, true)) << "NVLink unknown";
  DeviceGraph small{{{1}}, {{false}}};
  EXPECT_FALSE(pool->SetDeviceGraph(kGpu, small).ok()) << "a graph smaller than the node";
  DeviceGraph ragged{{{1, 2}, {1}}, {{false, false}, {false}}};
  EXPECT_FALSE(pool->SetDeviceGraph(kGpu, ragged).ok());
}

TEST(DevicePlacementTest, LargeNodesUseTheGreedySearch) {
  // 32 GPUs in NVLink quads: C(32, 8) is past the exhaustive limit.
  int n = 32;
  DeviceGraph g;
  g.bandwidth.assign(n, std::vector<double>(n, 10));
  g.nvlink.assign(n, std::vector<bool>(n, false));
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      if (a / 4 == b / 4) {
        g.bandwidth[a][b] = 100;
        g.nvlink[a][b] = a != b;
      }
  std::vector<int> free;
  for (int i = 0; i < n; ++i) free.push_back(i);
  auto quad = BestDeviceSet(g, free, 4, false);
  ASSERT_TRUE(quad);
  EXPECT_EQ(quad->front() / 4, quad->back() / 4) << "one NVLink quad";
  auto eight = BestDeviceSet(g, free, 8, false);
  ASSERT_TRUE(eight);
  EXPECT_FALSE(BestDeviceSet(g, free, 5, true)) << "no 5 GPUs all on NVLink";
}

}  // namespace
}  // namespace prism

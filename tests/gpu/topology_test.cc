#include <gtest/gtest.h>
#include <prism/gpu/topology.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace prism::gpu {
namespace {

Topology MustLoad(const std::string& name) {
  auto t = Topology::Load(name);
  if (!t.ok()) throw std::runtime_error(t.status().ToString());
  return std::move(t).value();
}

TEST(TopologyTest, ShippedProfilesLoad) {
  auto names = Topology::ProfileNames();
  ASSERT_GE(names.size(), 3u);
  for (const auto& n : names) {
    Topology t = MustLoad(n);
    EXPECT_EQ(t.name(), n);
    EXPECT_GT(t.gpu_count(), 0);
    for (int a = 0; a < t.gpu_count(); ++a) {
      EXPECT_EQ(t.Path(a, a), PathKind::kSelf);
      for (int b = 0; b < t.gpu_count(); ++b) {
        EXPECT_EQ(t.Path(a, b), t.Path(b, a));
        EXPECT_DOUBLE_EQ(t.Bandwidth(a, b), t.Bandwidth(b, a));
        if (a != b) {
          EXPECT_LT(t.Bandwidth(a, b), t.Bandwidth(a, a));
        }
      }
    }
  }
}

TEST(TopologyTest, NvSwitchBoxIsAllNvLink) {
  Topology t = MustLoad("h100-sxm-8");
  ASSERT_EQ(t.gpu_count(), 8);
  for (int a = 0; a < 8; ++a) {
    for (int b = 0; b < 8; ++b) {
      if (a == b) continue;
      EXPECT_EQ(t.Path(a, b), PathKind::kNvLink);
      EXPECT_EQ(t.NvLinks(a, b), 18);
      EXPECT_DOUBLE_EQ(t.Bandwidth(a, b), 450);
    }
  }
  EXPECT_EQ(t.gpus()[5].numa_node, 1);
  EXPECT_EQ(t.NumaCpus(1), "56-111,168-223");
  std::string m = t.Matrix();
  EXPECT_NE(m.find("NV18"), std::string::npos) << m;
  EXPECT_NE(m.find("NIC7"), std::string::npos) << m;
  EXPECT_NE(m.find("450"), std::string::npos) << m;
}

TEST(TopologyTest, PcieBoxHasSwitchPairsAndTwoSockets) {
  Topology t = MustLoad("pcie-8-2numa");
  EXPECT_EQ(t.Path(0, 1), PathKind::kPix);
  EXPECT_EQ(t.Path(0, 2), PathKind::kNode);
  EXPECT_EQ(t.Path(0, 4), PathKind::kSys);
  EXPECT_GT(t.Bandwidth(0, 1), t.Bandwidth(0, 2));
  EXPECT_GT(t.Bandwidth(0, 2), t.Bandwidth(0, 4));
  std::string m = t.Matrix();
  EXPECT_NE(m.find("PIX"), std::string::npos);
  EXPECT_NE(m.find("SYS"), std::string::npos);
}

TEST(TopologyTest, NvLinkPairs) {
  Topology t = MustLoad("nvlink-pairs-4");
  EXPECT_EQ(t.Path(0, 1), PathKind::kNvLink);
  EXPECT_EQ(t.Path(2, 3), PathKind::kNvLink);
  EXPECT_EQ(t.Path(1, 2), PathKind::kNode);
  EXPECT_DOUBLE_EQ(t.Bandwidth(0, 1), 56);
  EXPECT_TRUE(t.NvLinkMatrix()[3][2]);
  EXPECT_FALSE(t.NvLinkMatrix()[0][3]);
}

// Rings for collectives: NVLink neighbours adjacent, PCIe-switch pairs adjacent, the sockets
// crossed twice only.
TEST(TopologyTest, RingOrderKeepsFastNeighboursAdjacent) {
  Topology pairs = MustLoad("nvlink-pairs-4");
  auto hops = [](const Topology& t, const std::vector<int>& ring, PathKind kind) {
    int n = 0;
    for (size_t i = 0; i < ring.size(); ++i)
      n += t.Path(ring[i], ring[(i + 1) % ring.size()]) == kind;
    return n;
  };
  EXPECT_EQ(hops(pairs, {0, 2, 1, 3}, PathKind::kNvLink), 0);
  for (std::vector<int> given : {std::vector<int>{0, 2, 1, 3}, std::vector<int>{3, 0, 2, 1}}) {
    std::vector<int> ring = pairs.RingOrder(given);
    EXPECT_EQ(ring[0], given[0]);
    EXPECT_TRUE(std::is_permutation(ring.begin(), ring.end(), given.begin()));
    EXPECT_EQ(hops(pairs, ring, PathKind::kNvLink), 2) << "both NVLink pairs adjacent";
  }
  EXPECT_EQ(pairs.RingOrder({2, 1}), (std::vector<int>{2, 1})) << "two GPUs: one ring";
  Topology pcie = MustLoad("pcie-8-2numa");
  std::vector<int> ring = pcie.RingOrder({0, 4, 1, 5, 2, 6, 3, 7});
  ASSERT_EQ(ring.size(), 8u);
  EXPECT_EQ(ring[0], 0);
  EXPECT_EQ(hops(pcie, ring, PathKind::kSys), 2) << "the ring crosses the sockets once each way";
  EXPECT_EQ(hops(pcie, ring, PathKind::kPix), 4) << "every PCIe-switch pair adjacent";
  // NVSwitch: every order is as good; the given one stays.
  Topology nvs = MustLoad("h100-sxm-8");
  EXPECT_EQ(nvs.RingOrder({5, 1, 7}), (std::vector<int>{5, 1, 7}));
}

TEST(TopologyTest, JsonRoundTrips) {
  for (const auto& n : Topology::ProfileNames()) {
    Topology t = MustLoad(n);
    auto back = Topology::FromJson(t.ToJson());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->BandwidthMatrix(), t.BandwidthMatrix());
    EXPECT_EQ(back->Matrix(), t.Matrix());
    EXPECT_EQ(back->gpus()[0].uuid, t.gpus()[0].uuid);
  }
}

TEST(TopologyTest, BadProfilesAreClearErrors) {
  EXPECT_EQ(Topology::FromJson("{not json").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Topology::FromJson("{}").status().code(), StatusCode::kInvalidArgument);
  auto bad_numa = Topology::FromJson(R"({"numa":[{"id":0}],"gpus":[{"numa":3}]})");
  EXPECT_NE(bad_numa.status().message().find("NUMA node 3"), std::string::npos)
      << bad_numa.status().message();
  auto bad_pair = Topology::FromJson(R"({"gpus":[{},{}],"nvlink":{"pairs":[[0,5,2]]}})");
  EXPECT_NE(bad_pair.status().message().find("bad nvlink pair"), std::string::npos);
  auto missing = Topology::Load("no-such-box");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("h100-sxm-8"), std::string::npos)
      << "lists the shipped ones";

  std::string path = ::testing::TempDir() + "/box.json";
  std::ofstream(path) << R"({"name":"two","gpus":[{},{}],"nvlink":{"pairs":[[0,1,2]]}})";
  Topology t = MustLoad(path);
  EXPECT_EQ(t.gpu_count(), 2);
  EXPECT_EQ(t.NvLinks(0, 1), 2);
  std::remove(path.c_str());
}

TEST(TopologyTest, DiscoveryWithoutADriverSaysSo) {
  auto t = Topology::Discover();
  if (t.ok()) GTEST_SKIP() << "this machine has GPUs: " << t->gpu_count();
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace prism::gpu

// GPU placement end to end on a simulated node: the node takes its GPUs from a topology profile,
// k-GPU tasks get well-connected sets, workers are bound to their GPUs (CUDA_VISIBLE_DEVICES, as
// the sim backend in the worker sees it) and pinned to their GPUs' NUMA node.
#include <gtest/gtest.h>
#include <prism/gpu/backend.h>
#include <prism/gpu/topology.h>
#include <prism/prism.h>
#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

std::vector<int> GpuIds() { return prism::GetGpuIds(); }
std::string VisibleDevices() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v ? v : "<unset>";
}
// What the worker's own GPU backend sees.
std::vector<std::string> DeviceUuids() {
  auto backend = prism::gpu::CreateBackend(prism::gpu::BackendConfigFromEnv());
  if (!backend.ok()) throw std::runtime_error(backend.status().ToString());
  std::vector<std::string> out;
  for (int d = 0; d < (*backend)->device_count(); ++d) out.push_back((*backend)->device(d)->uuid);
  return out;
}
std::vector<int> Cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  std::vector<int> out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}
PRISM_REMOTE(GpuIds, VisibleDevices, DeviceUuids, Cpus);

class Holder {
 public:
  std::vector<int> Ids() { return prism::GetGpuIds(); }
  std::vector<int> MyCpus() { return Cpus(); }
};
Holder* MakeHolder() { return new Holder(); }
PRISM_REMOTE(MakeHolder, &Holder::Ids, &Holder::MyCpus);

class GpuSchedulingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("PRISM_GPU_BACKEND", "sim", 1);
    topology_ = *prism::gpu::Topology::Load("nvlink-pairs-4");
    prism::Init({.num_cpus = 8, .gpu_topology = "nvlink-pairs-4"});
  }
  void TearDown() override {
    prism::Shutdown();
    unsetenv("PRISM_GPU_BACKEND");
  }
  prism::gpu::Topology topology_;
};

TEST_F(GpuSchedulingTest, TheNodeHasTheProfilesGpus) {
  EXPECT_EQ(prism::ClusterResources().at("GPU"), 4.0);
}

TEST_F(GpuSchedulingTest, ATwoGpuTaskGetsAnNvLinkPairAndSeesOnlyIt) {
  auto ids = prism::Get(prism::Task(GpuIds).Options({.num_gpus = 2}).Remote());
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(topology_.Path(ids[0], ids[1]), prism::gpu::PathKind::kNvLink);
  EXPECT_EQ(prism::Get(prism::Task(VisibleDevices).Options({.num_gpus = 2}).Remote()),
            std::to_string(ids[0]) + "," + std::to_string(ids[1]));
  auto uuids = prism::Get(prism::Task(DeviceUuids).Options({.num_gpus = 2}).Remote());
  ASSERT_EQ(uuids.size(), 2u)
      << "the worker's backend sees its two devices only, renumbered 0 and 1";
  EXPECT_EQ(uuids[0], topology_.gpus()[ids[0]].uuid);
  EXPECT_EQ(uuids[1], topology_.gpus()[ids[1]].uuid);
  EXPECT_EQ(prism::Get(prism::Task(VisibleDevices).Remote()), VisibleDevices())
      << "a task without GPUs is not bound to any";
}

TEST_F(GpuSchedulingTest, SingleGpuActorsLeaveAPairWhole) {
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  int ia = prism::Get(a.Task(&Holder::Ids).Remote()).at(0);
  int ib = prism::Get(b.Task(&Holder::Ids).Remote()).at(0);
  EXPECT_EQ(topology_.Path(ia, ib), prism::gpu::PathKind::kNvLink) << "both in one pair";
  auto pair = prism::Get(prism::Task(GpuIds).Options({.num_gpus = 2}).Remote(), 30s);
  ASSERT_EQ(pair.size(), 2u);
  EXPECT_EQ(topology_.Path(pair[0], pair[1]), prism::gpu::PathKind::kNvLink)
      << "the other pair was kept whole";
}

TEST_F(GpuSchedulingTest, NvLinkPlacementGroupsAndInfeasibleRequests) {
  std::map<std::string, double> one{{"CPU", 1}, {"GPU", 1}};
  prism::PlacementGroupOptions three{.bundles = {one, one, one}, .require_nvlink = true};
  try {
    prism::CreatePlacementGroup(three);
    ADD_FAILURE() << "three GPUs all on NVLink do not exist on this node";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("NVLink"), std::string::npos) << e.what();
  }
  auto pg = prism::CreatePlacementGroup({.bundles = {one, one}, .require_nvlink = true});
  ASSERT_TRUE(pg.Wait(30s));
  int g0 =
      prism::Get(
          prism::Task(GpuIds)
              .Options({.num_gpus = 1, .placement_group = pg, .placement_group_bundle_index = 0})
              .Remote())
          .at(0);
  int g1 =
      prism::Get(
          prism::Task(GpuIds)
              .Options({.num_gpus = 1, .placement_group = pg, .placement_group_bundle_index = 1})
              .Remote())
          .at(0);
  EXPECT_EQ(topology_.Path(g0, g1), prism::gpu::PathKind::kNvLink);
  EXPECT_THROW(prism::Get(prism::Task(GpuIds).Options({.num_gpus = 5}).Remote()),
               prism::InfeasibleError)
      << "more GPUs than any node has";
}

// A profile whose two NUMA nodes own one of this machine's CPUs each: a worker bound to a GPU
// runs on that GPU's node's CPU only.
TEST(GpuAffinityTest, WorkersArePinnedToTheirGpusNumaNode) {
  std::vector<int> mine = Cpus();
  if (mine.size() < 2) GTEST_SKIP() << "needs two CPUs";
  std::string path = ::testing::TempDir() + "/affinity-profile.json";
  std::ofstream(path) << R"({"name": "affinity", "numa": [{"id": 0, "cpus": ")" << mine[1]
                      << R"("}, {"id": 1, "cpus": ")" << mine[0]
                      << R"("}], "gpus": [{"numa": 0}, {"numa": 1}]})";
  setenv("PRISM_GPU_BACKEND", "sim", 1);
  prism::Init({.num_cpus = 4, .gpu_topology = path});
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  for (auto* h : {&a, &b}) {
    int gpu = prism::Get(h->Task(&Holder::Ids).Remote()).at(0);
    EXPECT_EQ(prism::Get(h->Task(&Holder::MyCpus).Remote()),
              std::vector<int>{gpu == 0 ? mine[1] : mine[0]});
  }
  EXPECT_EQ(prism::Get(prism::Task(Cpus).Remote()), mine) << "CPU-only workers are not pinned";
  prism::Shutdown();
  unsetenv("PRISM_GPU_BACKEND");
  std::remove(path.c_str());
}

}  // namespace

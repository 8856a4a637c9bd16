// The scheduler: GPUs as per-device resource vectors, the spread strategy, and placement groups.
#include <gtest/gtest.h>
#include <prism/prism.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

std::vector<int> GpuIds() { return prism::GetGpuIds(); }
int SleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
// Says it started, then runs long.
void StartedThenSleep(prism::StreamWriter<int>& out, int ms) {
  out.Write(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  out.Write(2);
}
PRISM_REMOTE(GpuIds, SleepMs, StartedThenSleep);

class Device {
 public:
  std::vector<int> Ids() { return prism::GetGpuIds(); }
  int Ping() { return 1; }
};
Device* MakeDevice() { return new Device(); }
PRISM_REMOTE(MakeDevice, &Device::Ids, &Device::Ping);

std::string What(const std::exception& e) { return e.what(); }

class SchedulingTest : public ::testing::Test {
 protected:
  void SetUp() override { prism::Init({.num_cpus = 4, .num_gpus = 2}); }
  void TearDown() override { prism::Shutdown(); }
};

TEST_F(SchedulingTest, WholeGpusAreDistinctDevices) {
  EXPECT_TRUE(prism::Get(prism::Task(GpuIds).Remote()).empty()) << "a task without GPUs holds none";
  EXPECT_TRUE(prism::GetGpuIds().empty()) << "the driver holds none";
  auto one = prism::Get(prism::Task(GpuIds).Options({.num_gpus = 1}).Remote());
  ASSERT_EQ(one.size(), 1u);
  EXPECT_TRUE(one[0] == 0 || one[0] == 1);
  EXPECT_EQ(prism::Get(prism::Task(GpuIds).Options({.num_gpus = 2}).Remote()),
            (std::vector<int>{0, 1}));
  // Two tasks holding one GPU each at the same time hold different ones.
  auto a = prism::Actor(MakeDevice).Options({.num_gpus = 1}).Remote();
  auto b = prism::Actor(MakeDevice).Options({.num_gpus = 1}).Remote();
  auto ia = prism::Get(a.Task(&Device::Ids).Remote());
  auto ib = prism::Get(b.Task(&Device::Ids).Remote());
  ASSERT_EQ(ia.size(), 1u);
  ASSERT_EQ(ib.size(), 1u);
  EXPECT_NE(ia[0], ib[0]);
  // Both devices are held: a task that needs one waits until an actor is gone.
  auto waiting = prism::Task(GpuIds).Options({.num_gpus = 0.5}).Remote();
  EXPECT_EQ(prism::Wait(std::vector{waiting}, 1, 300ms).ready.size(), 0u);
  prism::Kill(a);
  EXPECT_EQ(prism::Get(waiting, 30s), ia) << "it gets the device the killed actor held";
}

TEST_F(SchedulingTest, FractionalSharesPackOrSpread) {
  auto a = prism::Actor(MakeDevice).Options({.num_gpus = 0.5}).Remote();
  auto b = prism::Actor(MakeDevice).Options({.num_gpus = 0.25}).Remote();
  auto whole = prism::Actor(MakeDevice).Options({.num_gpus = 1}).Remote();
  auto ia = prism::Get(a.Task(&Device::Ids).Remote());
  auto ib = prism::Get(b.Task(&Device::Ids).Remote());
  auto iw = prism::Get(whole.Task(&Device::Ids).Remote());
  EXPECT_EQ(ia, ib) << "shares pack onto one device";
  ASSERT_EQ(iw.size(), 1u);
  EXPECT_NE(iw, ia) << "the whole request got the untouched device";
  prism::Kill(a);
  prism::Kill(b);
  prism::Kill(whole);
  auto s1 =
      prism::Actor(MakeDevice)
          .Options({.num_gpus = 0.5, .scheduling_strategy = prism::SchedulingStrategy::kSpread})
          .Remote();
  auto s2 =
      prism::Actor(MakeDevice)
          .Options({.num_gpus = 0.5, .scheduling_strategy = prism::SchedulingStrategy::kSpread})
          .Remote();
  EXPECT_NE(prism::Get(s1.Task(&Device::Ids).Remote()), prism::Get(s2.Task(&Device::Ids).Remote()))
      << "spread puts shares on different devices";
}

TEST_F(SchedulingTest, ClusterResourcesAndNodes) {
  auto total = prism::ClusterResources();
  EXPECT_EQ(total["CPU"], 4);
  EXPECT_EQ(total["GPU"], 2);
  EXPECT_GT(total["memory"], 0);
  auto a = prism::Actor(MakeDevice).Options({.num_cpus = 1, .num_gpus = 1}).Remote();
  EXPECT_EQ(prism::Get(a.Task(&Device::Ping).Remote()), 1);
  auto free = prism::AvailableResources();
  EXPECT_EQ(free["CPU"], 3);
  EXPECT_EQ(free["GPU"], 1);
  auto nodes = prism::Nodes();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_TRUE(nodes[0].alive);
  EXPECT_EQ(nodes[0].node_id.size(), 32u);
  EXPECT_EQ(nodes[0].resources["GPU"], 2);
}

TEST_F(SchedulingTest, BadGpuRequestsFailClearly) {
  try {
    prism::Task(GpuIds).Options({.num_gpus = 1.5}).Remote();
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    EXPECT_NE(What(e).find("whole number"), std::string::npos) << e.what();
  }
  EXPECT_THROW(prism::Task(GpuIds).Options({.num_gpus = -1}).Remote(), prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(GpuIds).Options({.resources = {{"GPU", 1}}}).Remote(),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::Get(prism::Task(GpuIds).Options({.num_gpus = 3}).Remote()),
               prism::InfeasibleError);
  EXPECT_EQ(prism::Get(prism::Task(SleepMs).Remote(1)), 1) << "the runtime still works";
}

TEST_F(SchedulingTest, PlacementGroupReservesItsBundles) {
  auto pg = prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}, {{"CPU", 1}}}, .name = "pair"});
  ASSERT_TRUE(pg.Wait(30s));
  EXPECT_EQ(pg.bundles().size(), 2u);
  EXPECT_EQ(prism::GetPlacementGroup("pair").id(), pg.id());
  // Tasks in its bundles run on its reservation.
  EXPECT_EQ(prism::Get(prism::Task(SleepMs)
                           .Options({.placement_group = pg, .placement_group_bundle_index = 1})
                           .Remote(5)),
            5);
  EXPECT_EQ(prism::Get(prism::Task(SleepMs).Options({.placement_group = pg}).Remote(6)), 6);
  // The node has 4 CPUs and the group holds 2 of them: a 3-CPU task outside it waits.
  auto big = prism::Task(SleepMs).Options({.num_cpus = 3}).Remote(1);
  EXPECT_EQ(prism::Wait(std::vector{big}, 1, 500ms).ready.size(), 0u);
  prism::RemovePlacementGroup(pg);
  EXPECT_EQ(prism::Get(big, 30s), 1) << "the group's CPUs came back";
  EXPECT_THROW(prism::RemovePlacementGroup(pg), prism::InvalidArgumentError) << "removed twice";
  EXPECT_THROW(prism::GetPlacementGroup("pair"), prism::InvalidArgumentError);
}

TEST_F(SchedulingTest, PlacementGroupWaitsForRoom) {
  auto first = prism::CreatePlacementGroup({.bundles = {{{"CPU", 3}}}});
  ASSERT_TRUE(first.Wait(30s));
  auto second = prism::CreatePlacementGroup(
      {.bundles = {{{"CPU", 1}}, {{"CPU", 1}}}, .strategy = prism::PlacementStrategy::kStrictPack});
  EXPECT_FALSE(second.Wait(300ms)) << "all of its bundles or none: only one CPU is free";
  auto queued = prism::Task(SleepMs)
                    .Options({.placement_group = second, .placement_group_bundle_index = 0})
                    .Remote(7);
  prism::RemovePlacementGroup(first);
  EXPECT_TRUE(second.Wait(30s));
  EXPECT_EQ(prism::Get(queued, 30s), 7)
      << "a task queued for a pending group runs once it is created";
}

TEST_F(SchedulingTest, BadPlacementGroupsFailClearly) {
  try {
    prism::CreatePlacementGroup({.bundles = {{{"CPU", 100}}}});
    FAIL() << "expected InfeasibleError";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(What(e).find("never"), std::string::npos) << e.what();
  }
  EXPECT_THROW(prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}, {{"CPU", 1}}},
                                            .strategy = prism::PlacementStrategy::kStrictSpread}),
               prism::InfeasibleError)
      << "one node cannot hold two bundles that need a node each";
  EXPECT_THROW(prism::CreatePlacementGroup({}), prism::InvalidArgumentError);
  EXPECT_THROW(prism::CreatePlacementGroup({.bundles = {{}}}), prism::InvalidArgumentError);
  EXPECT_THROW(prism::CreatePlacementGroup({.bundles = {{{"GPU", 1.5}}}}),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::CreatePlacementGroup({.bundles = {{{"CPU", -1}}}}),
               prism::InvalidArgumentError);
  auto pg = prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}}, .name = "taken"});
  EXPECT_THROW(prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}}, .name = "taken"}),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(SleepMs)
                   .Options({.placement_group = pg, .placement_group_bundle_index = 1})
                   .Remote(1),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(SleepMs).Options({.placement_group_bundle_index = 0}).Remote(1),
               prism::InvalidArgumentError);
  try {
    prism::Get(prism::Task(SleepMs).Options({.num_cpus = 2, .placement_group = pg}).Remote(1));
    FAIL() << "expected InfeasibleError";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(What(e).find("placement group"), std::string::npos) << e.what();
  }
  EXPECT_THROW(prism::GetPlacementGroup("no-such-group"), prism::InvalidArgumentError);
  EXPECT_THROW(prism::PlacementGroup().Wait(1ms), prism::InvalidArgumentError);
  EXPECT_EQ(prism::Get(prism::Task(SleepMs).Options({.placement_group = pg}).Remote(2)), 2)
      << "nothing broke";
}

TEST_F(SchedulingTest, GpuBundlesHoldTheirDevices) {
  auto pg = prism::CreatePlacementGroup(
      {.bundles = {{{"CPU", 1}, {"GPU", 0.5}}, {{"CPU", 1}, {"GPU", 0.5}}},
       .strategy = prism::PlacementStrategy::kSpread});
  ASSERT_TRUE(pg.Wait(30s));
  auto in0 = prism::Get(
      prism::Task(GpuIds)
          .Options({.num_gpus = 0.5, .placement_group = pg, .placement_group_bundle_index = 0})
          .Remote());
  auto in1 = prism::Get(
      prism::Task(GpuIds)
          .Options({.num_gpus = 0.25, .placement_group = pg, .placement_group_bundle_index = 1})
          .Remote());
  ASSERT_EQ(in0.size(), 1u);
  ASSERT_EQ(in1.size(), 1u);
  EXPECT_NE(in0, in1) << "spread bundles lie on different devices";
  EXPECT_THROW(
      prism::Get(prism::Task(GpuIds).Options({.num_gpus = 1, .placement_group = pg}).Remote()),
      prism::InfeasibleError)
      << "no bundle holds a whole device";
  // Half of each device is reserved: a whole-device task outside the group waits.
  auto outside = prism::Task(GpuIds).Options({.num_gpus = 1}).Remote();
  EXPECT_EQ(prism::Wait(std::vector{outside}, 1, 300ms).ready.size(), 0u);
  prism::RemovePlacementGroup(pg);
  EXPECT_EQ(prism::Get(outside, 30s).size(), 1u);
}

TEST_F(SchedulingTest, RemovingAGroupEndsItsActorsAndTasks) {
  auto pg = prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}}});
  ASSERT_TRUE(pg.Wait(30s));
  auto actor = prism::Actor(MakeDevice).Options({.num_cpus = 1, .placement_group = pg}).Remote();
  EXPECT_EQ(prism::Get(actor.Task(&Device::Ping).Remote()), 1);
  auto long_task =
      prism::Task(StartedThenSleep).Options({.num_cpus = 0, .placement_group = pg}).Remote(20000);
  ASSERT_TRUE(long_task.Next(30s).has_value()) << "it runs";
  auto start = std::chrono::steady_clock::now();
  prism::RemovePlacementGroup(pg);
  try {
    prism::Get(actor.Task(&Device::Ping).Remote(), 30s);
    FAIL() << "expected ActorDiedError";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(What(e).find("placement group"), std::string::npos) << e.what();
  }
  auto end = long_task.Next(30s);
  ASSERT_TRUE(end.has_value());
  try {
    prism::Get(*end);
    FAIL() << "expected InfeasibleError";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(What(e).find("placement group"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s)
      << "the task was stopped, not waited for";
}

}  // namespace

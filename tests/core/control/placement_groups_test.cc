// PlacementGroups on its own: a request checked and added, reservations all or nothing on the
// node's pool, leases placed into bundles, and a group taken out with its names.
#include "control/placement_groups.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "base/ids.h"

namespace prism {
namespace {

ResourceSet Shape(const std::map<std::string, int64_t>& milli) {
  return *ResourceSet::FromMilli(milli);
}

rpc::CreatePlacementGroup Request(const std::vector<std::map<std::string, int64_t>>& bundles,
                                  rpc::PlacementStrategy strategy = rpc::PLACEMENT_PACK,
                                  const std::string& name = "") {
  rpc::CreatePlacementGroup req;
  req.set_strategy(strategy);
  req.set_name(name);
  for (const auto& b : bundles) {
    auto* bundle = req.add_bundles();
    for (const auto& [resource, milli] : b) {
      auto* r = bundle->add_resources();
      r->set_name(resource);
      r->set_milli(milli);
    }
  }
  return req;
}

class PlacementGroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = ResourcePool::Create(Shape({{"CPU", 4000}, {"GPU", 2000}}));
    ASSERT_TRUE(pool.ok()) << pool.status().ToString();
    node_ = std::move(*pool);
  }
  std::vector<uint64_t> ReserveAll() {
    std::vector<uint64_t> created;
    groups_.Reserve([&](PlacementGroupRecord& g) { created.push_back(g.id); });
    return created;
  }

  ResourcePool node_;
  PlacementGroups groups_{node_, "CPU: 4, GPU: 2", false};
  JobId job_ = JobIdFromInt(3);
};

TEST_F(PlacementGroupsTest, BadRequestsAreRefusedWithTheirReasonAndAddNothing) {
  auto code = [&](const rpc::CreatePlacementGroup& req, bool fixed = true) {
    auto r = groups_.Add(job_, req, fixed);
    return r.ok() ? StatusCode::kOk : r.status().code();
  };
  EXPECT_EQ(code(Request({})), StatusCode::kInvalidArgument);    // no bundle
  EXPECT_EQ(code(Request({{}})), StatusCode::kInvalidArgument);  // an empty one
  EXPECT_EQ(code(Request({{{"CPU", -1000}}})), StatusCode::kInvalidArgument);
  rpc::CreatePlacementGroup twice = Request({{{"CPU", 1000}}});
  *twice.mutable_bundles(0)->add_resources() = twice.bundles(0).resources(0);
  auto dup = groups_.Add(job_, twice, true);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("appears twice"), std::string::npos);
  rpc::CreatePlacementGroup strategy = Request({{{"CPU", 1000}}});
  strategy.set_strategy(static_cast<rpc::PlacementStrategy>(99));
  EXPECT_EQ(code(strategy), StatusCode::kInvalidArgument);
  // More than the node has, together: never, on a node of fixed size; it waits on one that may
  // grow.
  auto never = groups_.Add(job_, Request({{{"CPU", 3000}}, {{"CPU", 2000}}}), true);
  ASSERT_FALSE(never.ok());
  EXPECT_EQ(never.status().code(), StatusCode::kInfeasible);
  EXPECT_NE(never.status().message().find("do not fit together on the node's {CPU: 4, GPU: 2}"),
            std::string::npos)
      << never.status().message();
  auto apart = groups_.Add(
      job_, Request({{{"CPU", 1000}}, {{"CPU", 1000}}}, rpc::PLACEMENT_STRICT_SPREAD), true);
  ASSERT_FALSE(apart.ok());
  EXPECT_NE(apart.status().message().find("node of their own"), std::string::npos);
  EXPECT_TRUE(groups_.all().empty());
  EXPECT_TRUE(groups_.Add(job_, Request({{{"CPU", 3000}}, {{"CPU", 2000}}}), false).ok());
  EXPECT_TRUE(ReserveAll().empty()) << "it can never be reserved here, but waits";
  // A name is one group's.
  ASSERT_TRUE(
      groups_.Add(job_, Request({{{"CPU", 1000}}}, rpc::PLACEMENT_PACK, "trainers"), true).ok());
  EXPECT_EQ(code(Request({{{"CPU", 1000}}}, rpc::PLACEMENT_PACK, "trainers")),
            StatusCode::kAlreadyExists);
}

TEST_F(PlacementGroupsTest, ReservationsTakeEveryBundleOrNoneAndWaitForRoom) {
  auto first = groups_.Add(job_, Request({{{"CPU", 2000}, {"GPU", 1000}}, {{"CPU", 1000}}}), true);
  auto second = groups_.Add(job_, Request({{{"CPU", 2000}}}, rpc::PLACEMENT_PACK, "later"), true);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(ReserveAll(), std::vector<uint64_t>{*first});  // 3 of 4 CPUs: the second must wait
  PlacementGroupRecord* g = groups_.Find(*first);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->state, rpc::PG_CREATED);
  ASSERT_EQ(g->pools.size(), 2u);
  EXPECT_EQ(node_.available().Get("CPU"), 1000);
  EXPECT_EQ(groups_.Find(*second)->state, rpc::PG_PENDING);
  EXPECT_TRUE(ReserveAll().empty());
  // Taken out (its name too) and its reservation given back: the second fits now.
  std::optional<PlacementGroupRecord> gone = groups_.Take(*first);
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(groups_.Find(*first), nullptr);
  EXPECT_FALSE(groups_.Take(*first).has_value());
  for (const Allocation& a : gone->reserved) node_.Free(a);
  EXPECT_EQ(ReserveAll(), std::vector<uint64_t>{*second});
  EXPECT_EQ(groups_.FindByName("later"), groups_.Find(*second));
  groups_.Take(*second);
  EXPECT_EQ(groups_.FindByName("later"), nullptr);
  EXPECT_TRUE(
      groups_.Add(job_, Request({{{"CPU", 1000}}}, rpc::PLACEMENT_PACK, "later"), true).ok())
      << "a removed group's name is free again";
}

TEST_F(PlacementGroupsTest, LeasesDrawFromTheirBundles) {
  auto id = groups_.Add(
      job_, Request({{{"CPU", 1000}}, {{"CPU", 1000}}, {{"CPU", 2000}, {"GPU", 1000}}}), true);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(ReserveAll().size(), 1u);
  PlacementGroupRecord& g = *groups_.Find(*id);
  rpc::Placement any;
  any.set_bundle_index(-1);
  int bundle = -1;
  std::string error;
  // Packed: the first bundle with room.
  auto a = PlacementGroups::Allocate(Shape({{"CPU", 1000}}), any, g, &bundle, &error);
  ASSERT_TRUE(a.has_value()) << error;
  EXPECT_EQ(bundle, 0);
  a = PlacementGroups::Allocate(Shape({{"CPU", 1000}}), any, g, &bundle, &error);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(bundle, 1);
  // A given bundle; a GPU only the third holds.
  rpc::Placement third;
  third.set_bundle_index(2);
  a = PlacementGroups::Allocate(Shape({{"GPU", 1000}}), third, g, &bundle, &error);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(bundle, 2);
  ASSERT_EQ(a->devices.size(), 1u);
  // Full for now: nothing, and no error (it waits).
  EXPECT_FALSE(
      PlacementGroups::Allocate(Shape({{"GPU", 1000}}), third, g, &bundle, &error).has_value());
  EXPECT_TRUE(error.empty());
  // Never: a bundle that does not exist, a shape no bundle holds.
  rpc::Placement ninth;
  ninth.set_bundle_index(9);
  EXPECT_FALSE(
      PlacementGroups::Allocate(Shape({{"CPU", 1000}}), ninth, g, &bundle, &error).has_value());
  EXPECT_NE(error.find("bundle index 9 is out of range"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(
      PlacementGroups::Allocate(Shape({{"CPU", 3000}}), any, g, &bundle, &error).has_value());
  EXPECT_NE(error.find("more than any bundle"), std::string::npos) << error;
  // What a group reports: its bundles, and the devices each reserved.
  rpc::PlacementGroupInfo info;
  PlacementGroups::Fill(g, &info);
  EXPECT_EQ(info.id(), *id);
  EXPECT_EQ(info.state(), rpc::PG_CREATED);
  ASSERT_EQ(info.bundles_size(), 3);
  EXPECT_EQ(info.bundles(2).devices_size(), 1);
  EXPECT_EQ(info.bundles(0).devices_size(), 0);
}

TEST_F(PlacementGroupsTest, SpreadLeasesTakeTheBundlesInTurn) {
  auto id = groups_.Add(job_, Request({{{"CPU", 1000}}, {{"CPU", 1000}}, {{"CPU", 1000}}}), true);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(ReserveAll().size(), 1u);
  PlacementGroupRecord& g = *groups_.Find(*id);
  rpc::Placement spread;
  spread.set_bundle_index(-1);
  spread.set_strategy(rpc::STRATEGY_SPREAD);
  std::vector<int> order;
  std::string error;
  for (int i = 0; i < 4; ++i) {
    int bundle = -1;
    ASSERT_TRUE(
        PlacementGroups::Allocate(Shape({{"CPU", 200}}), spread, g, &bundle, &error).has_value())
        << error;
    order.push_back(bundle);
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 0}));
}

}  // namespace
}  // namespace prism

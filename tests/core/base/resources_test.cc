#include "base/resources.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace prism {

TEST(ResourceSetTest, FractionsAddUpExactly) {
  auto a = ResourceSet::FromUnits({{"CPU", 0.1}});
  ASSERT_TRUE(a.ok());
  ResourceSet sum;
  for (int i = 0; i < 10; ++i) sum.Add(*a);
  EXPECT_EQ(sum.Get("CPU"), 1000);
  auto one = ResourceSet::FromUnits({{"CPU", 1}});
  EXPECT_TRUE(one->IsSubsetOf(sum));
  sum.Subtract(*one);
  EXPECT_TRUE(sum.empty());
}

TEST(ResourceSetTest, SubsetAndText) {
  auto total = ResourceSet::FromUnits({{"CPU", 2}, {"gpu", 1}});
  auto need = ResourceSet::FromUnits({{"CPU", 1}, {"gpu", 0.5}});
  auto too_much = ResourceSet::FromUnits({{"CPU", 1}, {"tpu", 1}});
  EXPECT_TRUE(need->IsSubsetOf(*total));
  EXPECT_FALSE(too_much->IsSubsetOf(*total));
  EXPECT_EQ(need->ToString(), "CPU=1,gpu=0.500");
  EXPECT_EQ(ResourceSet().ToString(), "{}");
  EXPECT_EQ(ResourceSet::FromUnits({{"CPU", 2.25}, {"memory", 1024}, {"x", 0.001}, {"y", 12.05}})
                ->ToString(),
            "CPU=2.250,memory=1024,x=0.001,y=12.050");
  auto zero = ResourceSet::FromUnits({{"CPU", 0}});
  EXPECT_TRUE(zero->empty()) << "zero amounts are dropped";
}

TEST(ResourceSetTest, RejectsBadAmountsAndNames) {
  EXPECT_FALSE(ResourceSet::FromUnits({{"CPU", -1}}).ok());
  EXPECT_FALSE(ResourceSet::FromUnits({{"CPU", std::numeric_limits<double>::infinity()}}).ok());
  EXPECT_FALSE(ResourceSet::FromUnits({{"CPU", std::nan("")}}).ok());
  EXPECT_FALSE(ResourceSet::FromUnits({{"CPU", 1e300}}).ok());
  EXPECT_FALSE(ResourceSet::FromUnits({{"", 1}}).ok());
  EXPECT_FALSE(ResourceSet::FromMilli({{"x", -5}}).ok());
}

ResourceSet Units(const std::map<std::string, double>& u) {
  auto r = ResourceSet::FromUnits(u);
  return *r;
}

TEST(ResourcePoolTest, FractionalSharesPackOntoOneDeviceAndWholeRequestsTakeUntouchedOnes) {
  auto pool = ResourcePool::Create(Units({{"CPU", 8}, {"GPU", 2}}));
  ASSERT_TRUE(pool.ok());
  ASSERT_EQ(pool->Instances("GPU").size(), 2u);
  auto a = pool->Allocate(Units({{"CPU", 1}, {"GPU", 0.5}}));
  auto b = pool->Allocate(Units({{"CPU", 1}, {"GPU", 0.25}}));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->Indices("GPU"), std::vector<int>{0});
  EXPECT_EQ(b->Indices("GPU"), std::vector<int>{0}) << "packing keeps instance 1 whole";
  auto whole = pool->Allocate(Units({{"GPU", 1}}));
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->Indices("GPU"), std::vector<int>{1});
  EXPECT_FALSE(pool->Allocate(Units({{"GPU", 1}}))) << "instance 0 is shared, instance 1 taken";
  EXPECT_FALSE(pool->Allocate(Units({{"GPU", 0.5}}))) << "only 0.25 is left on instance 0";
  auto quarter = pool->Allocate(Units({{"GPU", 0.25}}));
  ASSERT_TRUE(quarter);
  EXPECT_EQ(pool->Instances("GPU").at(0), 0);
  EXPECT_EQ(pool->available().Get("GPU"), 0);
  pool->Free(*a);
  pool->Free(*b);
  pool->Free(*quarter);
  pool->Free(*whole);
  EXPECT_EQ(pool->available(), pool->total());
  EXPECT_EQ(pool->Instances("GPU").at(0), 1000);
  auto two = pool->Allocate(Units({{"GPU", 2}}));
  ASSERT_TRUE(two);
  EXPECT_EQ(two->Indices("GPU"), (std::vector<int>{0, 1}));
}

TEST(ResourcePoolTest, SpreadPutsSharesOnTheEmptiestDevice) {
  auto pool = ResourcePool::Create(Units({{"GPU", 3}}));
  ASSERT_TRUE(pool.ok());
  std::vector<int> got;
  for (int i = 0; i < 3; ++i)
    got.push_back(pool->Allocate(Units({{"GPU", 0.5}}), DevicePolicy::kSpread)->Indices("GPU")[0]);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
}

TEST(ResourcePoolTest, FeasibilityAndBadShapes) {
  auto pool = ResourcePool::Create(Units({{"CPU", 2}, {"GPU", 2}}));
  ASSERT_TRUE(pool.ok());
  EXPECT_TRUE(pool->CanEverFit(Units({{"GPU", 2}})));
  EXPECT_FALSE(pool->CanEverFit(Units({{"GPU", 3}})));
  EXPECT_FALSE(pool->CanEverFit(Units({{"CPU", 3}})));
  EXPECT_FALSE(CheckRequestShape(Units({{"GPU", 1.5}})).ok());
  EXPECT_TRUE(CheckRequestShape(Units({{"GPU", 0.3}})).ok());
  EXPECT_TRUE(CheckRequestShape(Units({{"GPU", 4}})).ok());
  EXPECT_FALSE(ResourcePool::Create(Units({{"GPU", 1.5}})).ok()) << "a node has whole devices";
}

TEST(ResourcePoolTest, BundlePoolKeepsTheDevicesItsAllocationTook) {
  auto node = ResourcePool::Create(Units({{"CPU", 4}, {"GPU", 2}}));
  ASSERT_TRUE(node.ok());
  node->Allocate(Units({{"GPU", 1}}));  // instance 0
  auto bundle_alloc = node->Allocate(Units({{"CPU", 2}, {"GPU", 0.5}}));
  ASSERT_TRUE(bundle_alloc);
  ResourcePool bundle = ResourcePool::FromAllocation(*bundle_alloc);
  EXPECT_FALSE(bundle.CanEverFit(Units({{"GPU", 1}}))) << "the bundle holds half a device";
  auto in = bundle.Allocate(Units({{"CPU", 1}, {"GPU", 0.25}}));
  ASSERT_TRUE(in);
  EXPECT_EQ(in->Indices("GPU"), std::vector<int>{1});
  EXPECT_FALSE(bundle.Allocate(Units({{"CPU", 2}})));
  bundle.Lend(Units({{"CPU", 1}}));
  EXPECT_TRUE(bundle.Allocate(Units({{"CPU", 2}})));
}

}  // namespace prism

#include "base/resources.h"

#include <gtest/gtest.h>

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

}  // namespace prism

#include "object_store/allocator.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace prism {
namespace {

TEST(ArenaAllocator, AllocatesAlignedAndFreesBack) {
  ArenaAllocator a(1 << 20, 64);
  auto x = a.Allocate(100);
  auto y = a.Allocate(1);
  ASSERT_TRUE(x && y);
  EXPECT_EQ(*x % 64, 0u);
  EXPECT_EQ(*y % 64, 0u);
  EXPECT_EQ(a.BlockSize(*x), 128u);
  EXPECT_EQ(a.used(), 192u);
  EXPECT_TRUE(a.Free(*x));
  EXPECT_FALSE(a.Free(*x)) << "a double free is refused";
  EXPECT_FALSE(a.Free(12345)) << "an offset that is no block is refused";
  EXPECT_TRUE(a.Free(*y));
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.num_holes(), 1u) << "freed neighbours merge back into one hole";
  EXPECT_EQ(a.largest_free(), a.capacity());
}

TEST(ArenaAllocator, RefusesWhatDoesNotFit) {
  ArenaAllocator a(4096, 64);
  EXPECT_FALSE(a.Allocate(4097));
  auto x = a.Allocate(4096);
  ASSERT_TRUE(x);
  EXPECT_FALSE(a.Allocate(1));
  a.Free(*x);
  EXPECT_TRUE(a.Allocate(4096));
}

TEST(ArenaAllocator, BestFitKeepsLargeHolesForLargeObjects) {
  ArenaAllocator a(10 * 1024, 64);
  auto small_a = a.Allocate(1024);
  auto sep1 = a.Allocate(64);
  auto big = a.Allocate(4096);
  auto sep2 = a.Allocate(64);
  ASSERT_TRUE(small_a && sep1 && big && sep2);
  a.Free(*small_a);  // a 1 KiB hole
  a.Free(*big);      // a 4 KiB hole
  auto s = a.Allocate(1000);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, *small_a) << "the small request takes the small hole";
  EXPECT_TRUE(a.Allocate(4096)) << "so the large one still fits";
}

// Mixed sizes, random order of frees, at high occupancy: the arena never fragments so much that
// a request below a fraction of the free space fails, and it ends as one hole.
TEST(ArenaAllocator, MixedSizesDoNotFragmentIntoUselessness) {
  const uint64_t cap = 256ull << 20;
  ArenaAllocator a(cap, 64);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> kind(0, 9);
  std::map<uint64_t, uint64_t> live;  // offset -> size
  uint64_t failures = 0, attempts = 0;
  for (int i = 0; i < 200000; ++i) {
    uint64_t size;
    int k = kind(rng);
    if (k < 6) {
      size = 100 + rng() % 16000;  // small
    } else if (k < 9) {
      size = (64 << 10) + rng() % (1 << 20);  // medium
    } else {
      size = (4 << 20) + rng() % (8 << 20);  // large
    }
    // Keep the arena about 75% full: free random blocks until the new one would fit in that.
    while (a.used() + size > cap / 4 * 3 && !live.empty()) {
      auto it = live.begin();
      std::advance(it, rng() % std::min<size_t>(live.size(), 64));
      ASSERT_TRUE(a.Free(it->first));
      live.erase(it);
    }
    attempts++;
    auto off = a.Allocate(size);
    if (!off) {
      failures++;
      continue;
    }
    ASSERT_EQ(live.count(*off), 0u);
    live[*off] = size;
  }
  // With a quarter of the arena free, almost every request (up to 12 MiB) still finds a hole.
  EXPECT_LT(failures * 100, attempts) << failures << " of " << attempts << " allocations failed";
  for (auto& [off, size] : live) ASSERT_TRUE(a.Free(off));
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.num_holes(), 1u);
}

}  // namespace
}  // namespace prism

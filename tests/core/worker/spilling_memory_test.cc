// SpillingMemory on a sim device: an allocation that finds the device's share full asks for a
// spill and tries again while something was spilled; nothing spilled leaves it out of memory.
#include "worker/spilling_memory.h"

#include <gtest/gtest.h>
#include <prism/gpu/backend.h>

#include <vector>

namespace prism {
namespace {

class SpillingMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gpu::BackendConfig config;
    config.kind = "sim";
    config.topology = "h100-sxm-8";
    auto b = gpu::CreateBackend(config);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(*b);
    auto s = backend_->CreateStream(0, "test");
    ASSERT_TRUE(s.ok());
    stream_ = std::move(*s);
    auto m = backend_->memory(0);
    ASSERT_TRUE(m.ok());
    pool_ = *m;
    pool_->set_limit(pool_->bytes_in_use() + (4 << 20));  // a task's share: 4 MiB
  }
  void TearDown() override {
    for (void* p : held_) (void)pool_->Deallocate(p, kChunk, *stream_);
    pool_->set_limit(std::nullopt);
  }
  static constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<gpu::Backend> backend_;
  std::unique_ptr<gpu::Stream> stream_;
  gpu::MemoryResource* pool_ = nullptr;
  std::vector<void*> held_;  // what the "device objects" hold
};

TEST_F(SpillingMemoryTest, AFullShareSpillsUntilTheAllocationFits) {
  std::vector<std::pair<int, uint64_t>> asked;
  SpillingMemory memory(pool_, [&](int device, uint64_t bytes) -> uint64_t {
    asked.emplace_back(device, bytes);
    if (held_.empty()) return 0;
    (void)pool_->Deallocate(held_.back(), kChunk, *stream_);  // one object leaves the device
    held_.pop_back();
    return kChunk;
  });
  for (int i = 0; i < 4; ++i) {
    auto p = memory.Allocate(kChunk, *stream_);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    held_.push_back(*p);
  }
  EXPECT_TRUE(asked.empty());  // it fitted: nothing spilled

  // Full: two objects must go for a 2 MiB allocation.
  auto big = memory.Allocate(2 * kChunk, *stream_);
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ(asked.size(), 2u);
  EXPECT_EQ(asked[0], std::make_pair(0, uint64_t{2 * kChunk}));
  EXPECT_EQ(held_.size(), 2u);
  EXPECT_TRUE(memory.Owns(*big, 2 * kChunk));
  EXPECT_TRUE(memory.Deallocate(*big, 2 * kChunk, *stream_).ok());
}

TEST_F(SpillingMemoryTest, NothingToSpillLeavesItOutOfMemory) {
  int asked = 0;
  SpillingMemory memory(pool_, [&](int, uint64_t) -> uint64_t {
    ++asked;
    return 0;
  });
  auto p = memory.Allocate(8 * kChunk, *stream_);  // more than the share
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(asked, 1);
  // The limit is the pool's: the wrapper sets and reads it there.
  memory.set_limit(std::nullopt);
  EXPECT_EQ(pool_->limit(), std::nullopt);
  EXPECT_EQ(memory.device(), 0);
}

}  // namespace
}  // namespace prism

#include "worker/memory_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "base/ids.h"
#include "base/spin.h"

namespace prism {
namespace {

ObjectId Id(uint32_t i) { return PutObjectId(DriverTaskId(JobIdFromInt(1)), i); }

TEST(MemoryStoreTest, PutGetAndRefCounting) {
  MemoryStore s;
  s.AddRef(Id(1));
  EXPECT_TRUE(s.Put(Id(1), StoredObject::Value("abc")));
  EXPECT_FALSE(s.Put(Id(1), StoredObject::Value("dup"))) << "a second Put is a stale duplicate";
  EXPECT_EQ(*s.GetIfReady(Id(1))->data, "abc");
  s.RemoveRef(Id(1));
  EXPECT_FALSE(s.Contains(Id(1)));
  EXPECT_FALSE(s.Put(Id(1), StoredObject::Value("late"))) << "nobody references it";
  EXPECT_EQ(s.size(), 0u);
}

TEST(MemoryStoreTest, WaitWakesOnEnoughObjects) {
  MemoryStore s;
  for (uint32_t i = 1; i <= 3; ++i) s.AddRef(Id(i));
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s.Put(Id(2), StoredObject::Value("b"));
    s.Put(Id(3), StoredObject::Value("c"));
  });
  auto ready = s.Wait({Id(1), Id(2), Id(3)}, 2, std::nullopt);
  t.join();
  EXPECT_EQ(ready, (std::vector<bool>{false, true, true}));
}

TEST(MemoryStoreTest, ThreeWaitersOnOneObjectAllWakeAndTheObjectGoesAfterThem) {
  // (An entry keeps its first waiter inline; more spill to the heap.)
  MemoryStore s;
  s.AddRef(Id(1));
  std::vector<std::thread> waiters;
  std::atomic<int> woke{0};
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      if (s.Wait({Id(1)}, 1, std::nullopt)[0]) woke++;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s.RemoveRef(Id(1));  // waited on: the entry stays until the waiters are done with it
  EXPECT_TRUE(s.Contains(Id(1)));
  EXPECT_TRUE(s.Put(Id(1), StoredObject::Value("v")));
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), 3);
  EXPECT_FALSE(s.Contains(Id(1))) << "gone once its last waiter left";
}

// The spin poll runs on the waiting thread between the checks of a Wait's spin (where a
// submitter reads its own reply): what it makes ready ends the Wait; it is told once when the
// spin is over; a Wait that finds its objects ready does not spin, so it does not poll.
TEST(MemoryStoreTest, TheSpinPollRunsOnTheWaitingThreadAndCanEndTheWait) {
  if (SpinBudget().count() == 0) GTEST_SKIP() << "one CPU: nothing spins";
  MemoryStore s;
  std::atomic<int> polls{0}, lasts{0};
  std::thread::id waiter = std::this_thread::get_id();
  std::atomic<bool> elsewhere{false};
  s.SetSpinPoll([&](bool last) {
    if (std::this_thread::get_id() != waiter) elsewhere = true;
    if (last) {
      lasts++;
      return;
    }
    if (++polls == 3) s.Put(Id(1), StoredObject::Value("made by the poll"));
  });
  s.AddRef(Id(1));
  auto ready = s.Wait({Id(1)}, 1, std::chrono::steady_clock::now() + std::chrono::seconds(10));
  EXPECT_EQ(ready, std::vector<bool>{true});
  EXPECT_EQ(polls.load(), 3);
  EXPECT_EQ(lasts.load(), 1);
  EXPECT_FALSE(elsewhere.load());
  EXPECT_EQ(*s.GetIfReady(Id(1))->data, "made by the poll");
  s.Wait({Id(1)}, 1, std::nullopt);  // ready: no spin
  EXPECT_EQ(polls.load(), 3);
  EXPECT_EQ(lasts.load(), 1);
}

TEST(MemoryStoreTest, WaitTimesOut) {
  MemoryStore s;
  s.AddRef(Id(1));
  auto start = MemoryStore::Clock::now();
  auto ready = s.Wait({Id(1)}, 1, start + std::chrono::milliseconds(30));
  EXPECT_FALSE(ready[0]);
  EXPECT_GE(MemoryStore::Clock::now() - start, std::chrono::milliseconds(30));
}

TEST(MemoryStoreTest, CallbacksRunOnceReady) {
  MemoryStore s;
  s.AddRef(Id(1));
  std::string seen;
  EXPECT_TRUE(s.OnReady(Id(1), [&](const StoredObject& o) { seen = *o.data; }));
  EXPECT_TRUE(seen.empty());
  s.Put(Id(1), StoredObject::Value("x"));
  EXPECT_EQ(seen, "x");
  std::string again;
  EXPECT_TRUE(s.OnReady(Id(1), [&](const StoredObject& o) { again = *o.data; }));
  EXPECT_EQ(again, "x");
  EXPECT_FALSE(s.OnReady(Id(9), [](const StoredObject&) {})) << "unknown id";
}

TEST(MemoryStoreTest, FailAllPendingWakesWaiters) {
  MemoryStore s;
  s.AddRef(Id(1));
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    s.FailAllPending(StoredObject::Error(rpc::ERROR_SYSTEM, "shut down"));
  });
  auto ready = s.Wait({Id(1)}, 1, std::nullopt);
  t.join();
  EXPECT_TRUE(ready[0]);
  EXPECT_TRUE(s.GetIfReady(Id(1))->is_error());
}

}  // namespace
}  // namespace prism

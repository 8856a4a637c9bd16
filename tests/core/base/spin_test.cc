// How long a waiting caller spins before it sleeps (base/spin.h).
#include "base/spin.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace prism {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

TEST(AdaptiveSpin, SpinsAboutTwiceATypicalWaitWithinItsBounds) {
  const nanoseconds cap = SpinBudget(SpinRole::kCaller);
  if (cap < microseconds(400))
    GTEST_SKIP() << "spinning is off or short here (one CPU, or PRISM_SPIN_US)";
  AdaptiveSpin spin;
  EXPECT_EQ(spin.Budget(), microseconds(50)) << "nothing learnt yet: the floor";
  for (int i = 0; i < 50; ++i) spin.Record(microseconds(150));
  EXPECT_NEAR(spin.Budget().count(), nanoseconds(microseconds(300)).count(), 1000)
      << "twice the typical wait";
  for (int i = 0; i < 200; ++i) spin.Record(microseconds(10));
  EXPECT_EQ(spin.Budget(), microseconds(50)) << "quick waits: no less than the floor";
  for (int i = 0; i < 200; ++i) spin.Record(cap * 3 / 4);
  EXPECT_EQ(spin.Budget(), cap) << "never more than the process's budget";
  for (int i = 0; i < 200; ++i) spin.Record(milliseconds(20));
  EXPECT_EQ(spin.Budget(), microseconds(50))
      << "long waits (long tasks): spinning longer would only burn a CPU";
  for (int i = 0; i < 200; ++i) spin.Record(microseconds(100));
  EXPECT_NEAR(spin.Budget().count(), nanoseconds(microseconds(200)).count(), 1000)
      << "quick again: learnt again";
}

TEST(SpinFor, StopsWhenReadyOrWhenTheBudgetIsSpent) {
  std::atomic<bool> flag{false};
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(2));
    flag.store(true);
  });
  EXPECT_TRUE(SpinFor([&] { return flag.load(); }, milliseconds(5000)));
  setter.join();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(SpinFor([] { return false; }, milliseconds(3)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(3));
}

}  // namespace
}  // namespace prism

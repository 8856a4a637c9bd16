// ArenaSpec: a pending task's spec in an arena of its own, with value semantics.
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "worker/pending_task.h"

namespace prism {
namespace {

TEST(ArenaSpecTest, LivesInItsOwnArenaAndCopiesAreDeep) {
  ArenaSpec a;
  EXPECT_NE(a->GetArena(), nullptr);
  a->set_name("f");
  a->add_args()->set_value(std::string(100000, 'v'));  // far past the first block
  ArenaSpec b = a;
  EXPECT_NE(b->GetArena(), a->GetArena());
  b->set_name("g");
  b->mutable_args(0)->set_value("w");
  EXPECT_EQ(a->name(), "f");
  EXPECT_EQ(a->args(0).value(), std::string(100000, 'v'));
  EXPECT_EQ(b->name(), "g");
  ArenaSpec c;
  c = a;
  EXPECT_EQ(c->args(0).value().size(), 100000u);
  const ArenaSpec& same = c;
  c = same;  // (self-assignment keeps it)
  EXPECT_EQ(c->name(), "f");
}

TEST(ArenaSpecTest, AMoveTakesTheSpecWithoutACopy) {
  ArenaSpec a;
  a->set_name("f");
  const rpc::TaskSpec* where = a.get();
  ArenaSpec b = std::move(a);
  EXPECT_EQ(b.get(), where);
  EXPECT_EQ(b->name(), "f");
  ArenaSpec c;
  c = std::move(b);
  EXPECT_EQ(c.get(), where);
  // A moved-from one can be assigned again.
  a = c;
  EXPECT_EQ(a->name(), "f");
  EXPECT_NE(a.get(), where);
}

TEST(ArenaSpecTest, APendingTaskCopiesItsSpec) {
  PendingTask t;
  t.spec->set_task_id("0123456789abcdef");
  PendingTask u = t;
  u.spec->set_attempt(3);
  EXPECT_EQ(t.spec->attempt(), 0u);
  EXPECT_EQ(u.spec->task_id(), "0123456789abcdef");
}

}  // namespace
}  // namespace prism

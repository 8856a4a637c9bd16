#include "base/ids.h"

#include <gtest/gtest.h>

#include <unordered_set>

namespace prism {

TEST(IdsTest, TaskIdsDeriveFromParentAndCounter) {
  JobId job = JobIdFromInt(7);
  TaskId root = DriverTaskId(job);
  EXPECT_EQ(JobIdOf(root), job);
  TaskId a = ChildTaskId(root, 1), b = ChildTaskId(root, 2);
  EXPECT_NE(a, b);
  EXPECT_EQ(a, ChildTaskId(root, 1)) << "the same parent and counter give the same id";
  EXPECT_EQ(JobIdOf(a), job);
  EXPECT_EQ(JobIdOf(ChildTaskId(a, 1)), job);
  EXPECT_NE(DriverTaskId(JobIdFromInt(8)), root);
}

TEST(IdsTest, ManyChildIdsAreDistinct) {
  TaskId root = DriverTaskId(JobIdFromInt(1));
  std::unordered_set<TaskId> seen;
  for (uint64_t i = 1; i <= 100000; ++i) ASSERT_TRUE(seen.insert(ChildTaskId(root, i)).second);
}

TEST(IdsTest, ObjectIdsNameTheirTask) {
  TaskId t = ChildTaskId(DriverTaskId(JobIdFromInt(3)), 5);
  ObjectId r = ReturnObjectId(t, 1);
  ObjectId p = PutObjectId(t, 1);
  EXPECT_NE(r, p);
  EXPECT_EQ(TaskIdOf(r), t);
  EXPECT_EQ(TaskIdOf(p), t);
  EXPECT_FALSE(IsPutObject(r));
  EXPECT_TRUE(IsPutObject(p));
  EXPECT_EQ(ObjectIndex(r), 1u);
  EXPECT_EQ(ObjectIndex(PutObjectId(t, 42)), 42u);
}

TEST(IdsTest, HexRoundTripAndBadInput) {
  UniqueId id = RandomUniqueId();
  EXPECT_FALSE(id.IsNil());
  EXPECT_EQ(UniqueIdFromHex(id.Hex()), id);
  EXPECT_TRUE(UniqueIdFromHex("xyz").IsNil());
  EXPECT_TRUE(UniqueIdFromHex(std::string(32, 'g')).IsNil());
  EXPECT_FALSE(ObjectId::IsValidBinary("short"));
  EXPECT_TRUE(ObjectId::FromBinary("short").IsNil());
}

}  // namespace prism

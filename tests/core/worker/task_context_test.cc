// TaskContext: which task the calling thread runs, and the ids of the tasks and objects it makes
// (per thread, per task and attempt).
#include "worker/task_context.h"

#include <gtest/gtest.h>
#include <prism/errors.h>

#include <thread>

#include "base/ids.h"

namespace prism {
namespace {

TaskId Tid(uint8_t n) {
  return TaskId::FromBinary(std::string(TaskId::kSize, static_cast<char>(n)));
}

rpc::PushTask Push(const TaskId& task, uint32_t attempt) {
  rpc::PushTask push;
  push.mutable_spec()->set_task_id(task.Binary());
  push.mutable_spec()->set_attempt(attempt);
  return push;
}

// Each case runs on a thread of its own: the context is the thread's.
template <typename F>
void OnFreshThread(F f) {
  std::thread t(f);
  t.join();
}

TEST(TaskContextTest, CodeOutsideTasksRunsUnderTheRoot) {
  TaskContext context(Tid(1));
  OnFreshThread([&] {
    EXPECT_FALSE(TaskContext::InTask());
    EXPECT_EQ(TaskContext::Spec(), nullptr);
    EXPECT_EQ(context.Current(), Tid(1));
    EXPECT_EQ(context.NextChild(), ChildTaskId(Tid(1), 1));
    EXPECT_EQ(context.NextPut(), PutObjectId(Tid(1), 1));
  });
  // The root's counters are the process's, shared by its threads.
  OnFreshThread([&] {
    EXPECT_EQ(context.NextChild(), ChildTaskId(Tid(1), 2));
    EXPECT_EQ(context.NextPut(), PutObjectId(Tid(1), 2));
  });
}

TEST(TaskContextTest, ATaskNumbersItsChildrenAndPutsByAttempt) {
  TaskContext context(Tid(1));
  OnFreshThread([&] {
    rpc::PushTask push = Push(Tid(7), 3);
    auto* gpu = push.add_devices();
    gpu->set_resource("GPU");
    gpu->set_index(5);
    auto* other = push.add_devices();
    other->set_resource("accelerator");
    other->set_index(2);
    {
      TaskContext::Running running(push);
      EXPECT_TRUE(TaskContext::InTask());
      EXPECT_EQ(TaskContext::Spec(), &push.spec());
      EXPECT_EQ(TaskContext::GpuIds(), std::vector<int>{5});
      EXPECT_EQ(context.Current(), Tid(7));
      EXPECT_EQ(context.NextChild(), ChildTaskId(Tid(7), 1));
      EXPECT_EQ(context.NextChild(), ChildTaskId(Tid(7), 2));
      // A put's counter carries the attempt: a retry's puts never meet an earlier attempt's.
      EXPECT_EQ(context.NextPut(), PutObjectId(Tid(7), 1u | (3u << 24)));
    }
    // The thread keeps the task's id (for threads it left running); the spec is gone.
    EXPECT_TRUE(TaskContext::InTask());
    EXPECT_EQ(TaskContext::Spec(), nullptr);
    EXPECT_EQ(context.Current(), Tid(7));
    // The next task starts its own counts.
    rpc::PushTask second = Push(Tid(8), 0);
    TaskContext::Running next(second);
    EXPECT_EQ(context.NextChild(), ChildTaskId(Tid(8), 1));
    EXPECT_EQ(context.NextPut(), PutObjectId(Tid(8), 1));
    EXPECT_TRUE(TaskContext::GpuIds().empty());
  });
  // Another thread never ran one.
  OnFreshThread([&] { EXPECT_EQ(context.Current(), Tid(1)); });
}

TEST(TaskContextTest, ATaskMayPutAtMost16MillionObjects) {
  TaskContext context(Tid(1));
  OnFreshThread([&] {
    rpc::PushTask push = Push(Tid(9), 1);
    TaskContext::Running running(push);
    for (uint32_t i = 1; i < (1u << 24) - 1; ++i) (void)context.NextPut();
    EXPECT_EQ(context.NextPut(), PutObjectId(Tid(9), ((1u << 24) - 1) | (1u << 24)));
    EXPECT_THROW(context.NextPut(), RuntimeError);
  });
}

}  // namespace
}  // namespace prism

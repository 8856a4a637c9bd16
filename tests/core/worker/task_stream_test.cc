// TaskStream, the caller's side of a streaming task: values in order, the end and the error, waits
// that lend the CPU and time out, and what a dropped or detached stream does to its task.
#include "worker/task_stream.h"

#include <gtest/gtest.h>
#include <prism/errors.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace prism {
namespace {

using namespace std::chrono_literals;

// Handles of a generation no runtime has: dropping them tells no runtime anything.
internal::RefPtr Handle(uint8_t n) {
  return std::make_shared<internal::RefHandle>(
      ObjectId::FromBinary(std::string(ObjectId::kSize, static_cast<char>(n))),
      internal::OwnerAddress{}, 987654321);
}

struct Calls {
  std::mutex mu;
  std::vector<ObjectId> cancelled;
  std::vector<bool> blocked;
};

TaskStream::Runtime Recording(Calls& calls) {
  TaskStream::Runtime r;
  r.cancel = [&calls](const internal::RefHandle& completion) {
    std::lock_guard<std::mutex> lock(calls.mu);
    calls.cancelled.push_back(completion.id());
  };
  r.blocked = [&calls](bool waiting) {
    std::lock_guard<std::mutex> lock(calls.mu);
    calls.blocked.push_back(waiting);
  };
  return r;
}

TEST(TaskStreamTest, ValuesComeInOrderThenTheEnd) {
  Calls calls;
  auto stream = std::make_shared<TaskStream>(Recording(calls));
  stream->SetCompletion(Handle(1));
  auto a = Handle(2), b = Handle(3);
  stream->Push(a);
  stream->Push(b);
  stream->End(/*failed=*/false);
  EXPECT_EQ(stream->Next(-1), a);
  EXPECT_EQ(stream->Next(-1), b);
  EXPECT_EQ(stream->Next(-1), nullptr);
  EXPECT_EQ(stream->Next(0), nullptr);
  stream.reset();
  EXPECT_TRUE(calls.cancelled.empty());  // it ended: nothing to stop
  EXPECT_TRUE(calls.blocked.empty());    // nothing waited
}

TEST(TaskStreamTest, AFailedTaskGivesItsCompletionOnceAfterTheValues) {
  Calls calls;
  TaskStream stream(Recording(calls));
  auto completion = Handle(1);
  stream.SetCompletion(completion);
  auto a = Handle(2);
  stream.Push(a);
  stream.End(/*failed=*/true);
  EXPECT_EQ(stream.Next(-1), a);
  EXPECT_EQ(stream.Next(-1), completion);  // holds the error
  EXPECT_EQ(stream.Next(-1), nullptr);
  EXPECT_EQ(stream.completion(), completion);
}

TEST(TaskStreamTest, AReaderThatWaitsLendsItsCpuAndIsWokenByTheNextValue) {
  Calls calls;
  TaskStream stream(Recording(calls));
  stream.SetCompletion(Handle(1));
  auto a = Handle(2);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    stream.Push(a);
  });
  EXPECT_EQ(stream.Next(-1), a);
  writer.join();
  std::lock_guard<std::mutex> lock(calls.mu);
  EXPECT_EQ(calls.blocked, (std::vector<bool>{true, false}));
}

TEST(TaskStreamTest, AWaitWithATimeoutFailsWhenNothingCame) {
  Calls calls;
  TaskStream stream(Recording(calls));
  stream.SetCompletion(Handle(1));
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(stream.Next(30), GetTimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
  std::lock_guard<std::mutex> lock(calls.mu);
  EXPECT_EQ(calls.blocked, (std::vector<bool>{true, false}));  // given back after the timeout too
}

TEST(TaskStreamTest, ADroppedStreamStopsItsTaskUnlessItEndedOrWasDetached) {
  Calls calls;
  auto completion = Handle(1);
  {
    TaskStream stream(Recording(calls));
    stream.SetCompletion(completion);
    stream.Push(Handle(2));  // values unread do not matter: the task goes on writing
  }
  ASSERT_EQ(calls.cancelled.size(), 1u);
  EXPECT_EQ(calls.cancelled[0], completion->id());

  {
    TaskStream stream(Recording(calls));
    stream.SetCompletion(Handle(3));
    stream.Detach();                              // the runtime shut down
    EXPECT_THROW(stream.Next(-1), RuntimeError);  // a read that would wait fails
  }
  EXPECT_EQ(calls.cancelled.size(), 1u);
  EXPECT_TRUE(calls.blocked.empty());

  // A cancel that throws (the runtime shut down meanwhile) does not escape the destructor.
  TaskStream::Runtime throwing;
  throwing.cancel = [](const internal::RefHandle&) { throw RuntimeError("prism is shut down"); };
  {
    TaskStream stream(throwing);
    stream.SetCompletion(Handle(4));
  }
}

}  // namespace
}  // namespace prism

// Streaming (generator) tasks: values reach the caller while the task runs.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

// A latch the driver opens; the streaming task waits for it between its first and other values.
class Gate {
 public:
  void Open() { open_ = true; }
  bool IsOpen() const { return open_; }

 private:
  bool open_ = false;
};
Gate* MakeGate() { return new Gate(); }
PRISM_REMOTE(MakeGate, &Gate::Open, &Gate::IsOpen);

void Gated(prism::StreamWriter<int>& out, prism::ActorHandle<Gate> gate, int n) {
  out.Write(0);
  while (!prism::Get(gate.Task(&Gate::IsOpen).Remote())) std::this_thread::sleep_for(2ms);
  for (int i = 1; i < n; ++i) out.Write(i);
}

void CountTo(prism::StreamWriter<int>& out, int n) {
  for (int i = 0; i < n; ++i) out.Write(i);
}

void FailAfter(prism::StreamWriter<std::string>& out, int n) {
  for (int i = 0; i < n; ++i) out.Write("value " + std::to_string(i));
  throw std::range_error("the source ran dry");
}

void Chunks(prism::StreamWriter<std::vector<uint8_t>>& out, int n, int bytes) {
  for (int i = 0; i < n; ++i)
    out.Write(std::vector<uint8_t>(static_cast<size_t>(bytes), static_cast<uint8_t>(i + 1)));
}

// Dies (the whole worker) after `die_after` values on its first run; later runs finish.
void CrashOnce(prism::StreamWriter<int>& out, std::string marker, int n, int die_after) {
  bool first = !std::filesystem::exists(marker);
  if (first) std::ofstream(marker) << "ran";
  for (int i = 0; i < n; ++i) {
    if (first && i == die_after) _exit(3);
    out.Write(i * 10);
  }
}

void Forever(prism::StreamWriter<int>& out) {
  for (int i = 0;; ++i) {
    out.Write(i);
    std::this_thread::sleep_for(20ms);
  }
}

// Reads a stream inside a task.
int SumOfStream(int n) {
  auto s = prism::Task(CountTo).Remote(n);
  int sum = 0;
  while (auto ref = s.Next()) sum += prism::Get(*ref);
  return sum;
}

int Plain(int x) { return x; }

PRISM_REMOTE(Gated, CountTo, FailAfter, Chunks, CrashOnce, Forever, SumOfStream, Plain);

class StreamingTest : public ::testing::Test {
 protected:
  void SetUp() override { prism::Init({.num_cpus = 2}); }
  void TearDown() override { prism::Shutdown(); }
};

TEST_F(StreamingTest, CallerReadsTheFirstValueBeforeTheTaskEnds) {
  auto gate = prism::Actor(MakeGate).Remote();
  prism::ObjectRefStream<int> s = prism::Task(Gated).Remote(gate, 100);
  auto first = s.Next(30s);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(prism::Get(*first), 0);
  // The task is still waiting for the gate: it has not ended.
  EXPECT_TRUE(prism::Wait(std::vector{s.completion()}, 1, 100ms).ready.empty());
  prism::Get(gate.Task(&Gate::Open).Remote());
  std::vector<int> rest;
  while (auto ref = s.Next(30s)) rest.push_back(prism::Get(*ref));
  ASSERT_EQ(rest.size(), 99u);
  for (int i = 0; i < 99; ++i) EXPECT_EQ(rest[static_cast<size_t>(i)], i + 1);
  EXPECT_FALSE(s.Next().has_value()) << "an ended stream stays ended";
}

TEST_F(StreamingTest, AFailureComesAfterTheValuesWritten) {
  auto s = prism::Task(FailAfter).Remote(3);
  for (int i = 0; i < 3; ++i) {
    auto ref = s.Next(30s);
    ASSERT_TRUE(ref.has_value());
    EXPECT_EQ(prism::Get(*ref), "value " + std::to_string(i));
  }
  auto error = s.Next(30s);
  ASSERT_TRUE(error.has_value()) << "the error has a ref of its own";
  try {
    prism::Get(*error);
    FAIL() << "expected TaskError";
  } catch (const prism::TaskError& e) {
    EXPECT_NE(std::string(e.what()).find("the source ran dry"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(s.Next().has_value());
}

TEST_F(StreamingTest, LargeValuesGoThroughTheStore) {
  auto s = prism::Task(Chunks).Remote(5, 1 << 20);
  int n = 0;
  while (auto ref = s.Next(30s)) {
    auto v = prism::Get(*ref);
    ASSERT_EQ(v.size(), size_t{1} << 20);
    EXPECT_EQ(v.front(), n + 1);
    EXPECT_EQ(v.back(), n + 1);
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST_F(StreamingTest, ARetryDoesNotRepeatValues) {
  std::string marker = "/tmp/prism-stream-retry-" + std::to_string(getpid());
  std::filesystem::remove(marker);
  auto s = prism::Task(CrashOnce).Options({.max_retries = 1}).Remote(marker, 6, 3);
  std::vector<int> got;
  while (auto ref = s.Next(30s)) got.push_back(prism::Get(*ref));
  std::filesystem::remove(marker);
  EXPECT_EQ(got, (std::vector<int>{0, 10, 20, 30, 40, 50}));
  EXPECT_GE(prism::GetRuntimeStats().tasks_retried, 1u) << "the first run died";
}

TEST_F(StreamingTest, WorkerDeathWithoutRetriesEndsTheStreamWithAnError) {
  std::string marker = "/tmp/prism-stream-crash-" + std::to_string(getpid());
  std::filesystem::remove(marker);
  auto s = prism::Task(CrashOnce).Options({.max_retries = 0}).Remote(marker, 6, 2);
  std::optional<prism::ObjectRef<int>> last;
  int values = 0;
  while (auto ref = s.Next(30s)) {
    last = ref;
    ++values;
  }
  EXPECT_GE(values, 1) << "the values that left the worker before it died, then the error";
  EXPECT_LE(values, 3);
  std::filesystem::remove(marker);
  ASSERT_TRUE(last.has_value());
  EXPECT_THROW(prism::Get(*last), prism::WorkerCrashedError);
}

TEST_F(StreamingTest, CancelStopsAStream) {
  auto s = prism::Task(Forever).Remote();
  ASSERT_TRUE(s.Next(30s).has_value());
  prism::Cancel(s.completion(), /*force=*/true);
  std::optional<prism::ObjectRef<int>> last;
  int values = 0;
  while (auto ref = s.Next(30s)) {
    last = ref;
    ++values;
  }
  ASSERT_TRUE(last.has_value());
  EXPECT_THROW(prism::Get(*last), prism::TaskCancelledError);
  EXPECT_LT(values, 1000);
}

TEST_F(StreamingTest, TimeoutsAndDroppedStreams) {
  auto gate = prism::Actor(MakeGate).Remote();
  auto s = prism::Task(Gated).Remote(gate, 3);
  ASSERT_TRUE(s.Next(30s).has_value());
  EXPECT_THROW(s.Next(100ms), prism::GetTimeoutError);
  prism::Get(gate.Task(&Gate::Open).Remote());
  {
    auto dropped = prism::Task(CountTo).Remote(50);
    ASSERT_TRUE(dropped.Next(30s).has_value());
  }  // the caller lets go of the rest
  EXPECT_EQ(prism::Get(prism::Task(Plain).Remote(7)), 7);
  EXPECT_THROW(prism::ObjectRefStream<int>().Next(), prism::InvalidArgumentError);
}

TEST_F(StreamingTest, PlainTasksDoNotWaitBehindAStream) {
  auto s = prism::Task(Forever).Remote();
  ASSERT_TRUE(s.Next(30s).has_value());
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 200; ++i) refs.push_back(prism::Task(Plain).Remote(i));
  auto got = prism::Get(refs, 60s);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(got[static_cast<size_t>(i)], i);
}

TEST_F(StreamingTest, DroppingAStreamStopsItsTask) {
  {
    auto s = prism::Task(Forever).Remote();
    ASSERT_TRUE(s.Next(30s).has_value());
  }
  // The node has 2 CPUs and the endless task held one: a 2-CPU task runs only once it stopped.
  EXPECT_EQ(prism::Get(prism::Task(Plain).Options({.num_cpus = 2}).Remote(9), 30s), 9);
}

TEST_F(StreamingTest, StreamsInsideTasks) {
  EXPECT_EQ(prism::Get(prism::Task(SumOfStream).Remote(100)), 4950);
}

TEST_F(StreamingTest, CallingAStreamingFunctionAsAPlainOneFailsClearly) {
  try {
    prism::Get(prism::Task(prism::CppFunction<int>("CountTo")).Remote(3));
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("stream"), std::string::npos) << e.what();
  }
}

}  // namespace

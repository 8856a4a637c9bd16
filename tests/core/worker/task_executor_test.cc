// The task executor: one thread for short tasks, more (up to the limit) once tasks block.
#include "worker/task_executor.h"

#include <gtest/gtest.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

namespace prism {
namespace {

using namespace std::chrono_literals;

class TaskExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    asio::local::stream_protocol::socket a(io_), b(io_);
    asio::local::connect_pair(a, b);
    peer_ = std::move(b);
    conn_ = rpc::Connection::Create(std::move(a));
  }
  rpc::PushTask Push(int n) {
    rpc::PushTask p;
    p.set_lease_id(static_cast<uint64_t>(n));
    return p;
  }
  asio::io_context io_;
  asio::local::stream_protocol::socket peer_{io_};
  std::shared_ptr<rpc::Connection> conn_;
};

TEST_F(TaskExecutorTest, BlockingTasksGetTheirThreads) {
  std::atomic<int> arrived{0};
  std::atomic<int> met{0};
  TaskExecutor executor(
      [&](std::shared_ptr<const rpc::PushTask>, const std::shared_ptr<rpc::Connection>&) {
        // Four tasks that each wait for all four: they finish only if they run at once.
        arrived++;
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (arrived.load() < 4 && std::chrono::steady_clock::now() < deadline)
          std::this_thread::sleep_for(1ms);
        if (arrived.load() >= 4) met++;
        ExecutedTask done;
        done.deferred = true;  // nothing to send
        return done;
      });
  std::thread main([&] { executor.Run(); });
  executor.AllowThreads(4);
  for (int i = 0; i < 4; ++i) executor.Enqueue(Push(i), conn_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (met.load() < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(met.load(), 4);
  EXPECT_EQ(executor.threads(), 4);
  // Idle for long enough, the added threads end.
  deadline = std::chrono::steady_clock::now() + 20s;
  while (executor.threads() > 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(executor.threads(), 1);
  // And come back when calls block again.
  arrived = 0;
  met = 0;
  for (int i = 0; i < 4; ++i) executor.Enqueue(Push(i), conn_);
  deadline = std::chrono::steady_clock::now() + 20s;
  while (met.load() < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(met.load(), 4);
  executor.Stop();
  main.join();
  executor.Join();
}

// A limit set lower (a worker that ran GPU tasks side by side becoming an actor of concurrency 1):
// tasks blocked after it never run two at once, and the added threads go.
TEST_F(TaskExecutorTest, ALoweredLimitHoldsAtOnce) {
  std::atomic<int> running{0}, most{0}, finished{0};
  std::atomic<bool> lowered{false};
  TaskExecutor executor(
      [&](std::shared_ptr<const rpc::PushTask> p, const std::shared_ptr<rpc::Connection>&) {
        int now = ++running;
        if (lowered.load()) most = std::max(most.load(), now);
        std::this_thread::sleep_for(p->lease_id() < 100 ? 300ms : 20ms);
        running--;
        finished++;
        ExecutedTask done;
        done.deferred = true;
        return done;
      });
  std::thread main([&] { executor.Run(); });
  executor.AllowThreads(4);
  for (int i = 0; i < 4; ++i) executor.Enqueue(Push(i), conn_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (executor.threads() < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(executor.threads(), 4);
  while (finished.load() < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  executor.SetThreads(1);
  lowered = true;
  for (int i = 0; i < 20; ++i) executor.Enqueue(Push(100 + i), conn_);
  while (finished.load() < 24 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(finished.load(), 24);
  EXPECT_EQ(most.load(), 1) << "one at a time after the limit went to 1";
  EXPECT_EQ(executor.threads(), 1);
  executor.Stop();
  main.join();
  executor.Join();
}

TEST_F(TaskExecutorTest, BusyTasksDoNotAddThreads) {
  std::atomic<int> ran{0};
  TaskExecutor executor(
      [&](std::shared_ptr<const rpc::PushTask>, const std::shared_ptr<rpc::Connection>&) {
        // Computes for 20 ms: long, but on the CPU (another thread would only compete with it).
        auto end = std::chrono::steady_clock::now() + 20ms;
        volatile uint64_t x = 0;
        while (std::chrono::steady_clock::now() < end) x = x + 1;
        ran++;
        ExecutedTask done;
        done.deferred = true;
        return done;
      });
  std::thread main([&] { executor.Run(); });
  executor.AllowThreads(4);
  for (int i = 0; i < 10; ++i) executor.Enqueue(Push(i), conn_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (ran.load() < 10 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(ran.load(), 10);
  // (A thread preempted for long on a loaded machine looks blocked: allow one such addition.)
  EXPECT_LE(executor.threads(), 2) << "computing tasks got threads of their own";
  executor.Stop();
  main.join();
  executor.Join();
}

TEST_F(TaskExecutorTest, ShortTasksKeepToOneThread) {
  std::atomic<int> ran{0};
  TaskExecutor executor(
      [&](std::shared_ptr<const rpc::PushTask>, const std::shared_ptr<rpc::Connection>&) {
        ran++;
        ExecutedTask done;
        done.deferred = true;
        return done;
      });
  std::thread main([&] { executor.Run(); });
  executor.AllowThreads(16, 50ms);
  for (int i = 0; i < 10000; ++i) executor.Enqueue(Push(i), conn_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (ran.load() < 10000 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(ran.load(), 10000);
  EXPECT_EQ(executor.threads(), 1) << "no task ran for 50 ms, so no thread was added";
  executor.Stop();
  main.join();
  executor.Join();
}

// Reads one frame from `s` (what the decoder holds already first).
rpc::Envelope ReadFrame(asio::local::stream_protocol::socket& s, rpc::FrameDecoder& d) {
  std::optional<rpc::Envelope> got;
  while (true) {
    Status st = d.Drain([&](rpc::Envelope& e) {
      got = std::move(e);
      return false;
    });
    if (!st.ok() || got) break;
    size_t avail = 0;
    char* p = d.WritableSpace(4096, &avail);
    d.Commit(s.read_some(asio::buffer(p, avail)));
  }
  return got.value_or(rpc::Envelope());
}

// A caller whose calls come one at a time: between them the executor reads the caller's
// connection itself (SetReadNext), so a call runs without the event loop passing it on. The loop
// runs too and takes what the executor misses; every call runs once, in order, either way.
TEST_F(TaskExecutorTest, CallsThatComeOneAtATimeAreReadByTheExecutorItself) {
  if (SpinBudget(SpinRole::kServer).count() == 0)
    GTEST_SKIP() << "one CPU (or PRISM_SPIN_US=0): nothing spins";
  std::atomic<int> ran{0}, read_here{0}, via_loop{0};
  TaskExecutor executor(
      [&](std::shared_ptr<const rpc::PushTask> p, const std::shared_ptr<rpc::Connection>&) {
        ran++;
        ExecutedTask done;
        done.reply.set_attempt(static_cast<uint32_t>(p->lease_id()));  // which call this answers
        return done;
      });
  rpc::Connection::TakeHere take = [&](rpc::Connection& c, rpc::Envelope& m) {
    if (!m.has_push_task()) return false;
    executor.Enqueue(std::move(*m.mutable_push_task()),
                     std::static_pointer_cast<rpc::Connection>(c.shared_from_this()));
    read_here++;
    return true;
  };
  executor.SetReadNext([&](rpc::Connection& c) { return c.TryReadHere(take); });
  conn_->ShareReads();
  conn_->Start(
      [&](rpc::Connection& c, rpc::Envelope& m) {
        via_loop++;
        executor.Enqueue(std::move(*m.mutable_push_task()),
                         std::static_pointer_cast<rpc::Connection>(c.shared_from_this()));
      },
      [](rpc::Connection&, const Status&) {});
  auto guard = asio::make_work_guard(io_);
  std::thread loop([&] { io_.run(); });
  std::thread main([&] { executor.Run(); });
  rpc::FrameDecoder replies(1 << 20);
  constexpr int kCalls = 300;
  for (int i = 1; i <= kCalls; ++i) {
    rpc::Envelope call;
    call.mutable_push_task()->set_lease_id(static_cast<uint64_t>(i));
    std::string frame;
    rpc::AppendFrame(call, &frame);
    asio::write(peer_, asio::buffer(frame));
    rpc::Envelope reply = ReadFrame(peer_, replies);
    ASSERT_TRUE(reply.has_task_reply());
    ASSERT_EQ(reply.task_reply().attempt(), static_cast<uint32_t>(i));
  }
  EXPECT_EQ(ran.load(), kCalls);
  EXPECT_EQ(read_here.load() + via_loop.load(), kCalls);
  EXPECT_GT(read_here.load(), 0) << "the executor never caught a call itself";
  executor.Stop();
  main.join();
  executor.Join();
  guard.reset();
  io_.stop();
  loop.join();
}

}  // namespace
}  // namespace prism

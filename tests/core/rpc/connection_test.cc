// Connection: reads shared between the event loop and a thread that waits for the next frame
// (ShareReads, TryReadHere). Frames are delivered once each, in order, and never to two
// handlers at a time.
#include "rpc/connection.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace prism::rpc {
namespace {

using namespace std::chrono_literals;

Envelope Push(uint64_t n) {
  Envelope e;
  e.mutable_push_task()->set_lease_id(n);
  return e;
}

Envelope Status(uint64_t n) {
  Envelope e;
  e.mutable_status_request()->set_request_id(n);
  return e;
}

uint64_t NumberOf(const Envelope& e) {
  return e.has_push_task() ? e.push_task().lease_id() : e.status_request().request_id();
}

class SharedReadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    asio::local::stream_protocol::socket a(io_), b(io_);
    asio::local::connect_pair(a, b);
    peer_ = std::move(b);
    conn_ = Connection::Create(std::move(a));
  }
  void TearDown() override {
    conn_->Close(prism::Status::OK());
    io_.poll();
  }
  // Writes frames on the peer's side, in one write.
  void PeerSends(const std::vector<Envelope>& frames) {
    std::string bytes;
    for (const auto& f : frames) AppendFrame(f, &bytes);
    asio::write(peer_, asio::buffer(bytes));
  }
  void Start() {
    conn_->Start(
        [this](Connection&, Envelope& m) {
          std::lock_guard<std::mutex> lock(mu_);
          on_loop_.push_back(NumberOf(m));
        },
        [this](Connection&, const prism::Status& st) {
          std::lock_guard<std::mutex> lock(mu_);
          closed_ = true;
          close_reason_ = st;
        });
  }
  std::vector<uint64_t> OnLoop() {
    std::lock_guard<std::mutex> lock(mu_);
    return on_loop_;
  }

  asio::io_context io_;
  asio::local::stream_protocol::socket peer_{io_};
  std::shared_ptr<Connection> conn_;
  std::mutex mu_;
  std::vector<uint64_t> on_loop_;
  bool closed_ = false;
  prism::Status close_reason_;
  std::vector<uint64_t> taken_;
  Connection::TakeHere take_pushes_ = [this](Connection&, Envelope& m) {
    if (!m.has_push_task()) return false;
    taken_.push_back(NumberOf(m));
    return true;
  };
};

TEST_F(SharedReadsTest, TheWaitingThreadTakesWhatItWantsAndTheLoopGetsTheRestInOrder) {
  conn_->ShareReads();
  Start();  // (the loop does not run until poll: only TryReadHere reads meanwhile)
  PeerSends({Push(1), Push(2), Status(3), Push(4)});
  EXPECT_TRUE(conn_->TryReadHere(take_pushes_));
  // 1 and 2 taken here; 3 is the loop's, and 4 comes after it, so it goes there too.
  EXPECT_EQ(taken_, (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(OnLoop().empty());
  io_.poll();
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{3, 4}));
  // Once the loop ran what it was handed, the waiting thread takes frames again.
  PeerSends({Push(5)});
  EXPECT_TRUE(conn_->TryReadHere(take_pushes_));
  EXPECT_EQ(taken_, (std::vector<uint64_t>{1, 2, 5}));
  // Nothing there: nothing taken, and it does not block.
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));
}

TEST_F(SharedReadsTest, AFrameHandedToTheLoopHoldsBackTheOnesAfterIt) {
  conn_->ShareReads();
  Start();
  PeerSends({Status(1)});
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));  // read, but not taken: handed to the loop
  PeerSends({Push(2)});
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));  // 1 is not run yet: 2 waits behind it
  EXPECT_TRUE(taken_.empty());
  io_.poll();
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{1, 2}));
}

TEST_F(SharedReadsTest, TheLoopReadsWhatNobodyElseDoes) {
  conn_->ShareReads();
  Start();
  PeerSends({Push(1), Status(2)});
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (OnLoop().size() < 2 && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{1, 2}));
  // And sees the peer go.
  peer_.close();
  deadline = std::chrono::steady_clock::now() + 10s;
  while (!conn_->closed() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_TRUE(conn_->closed());
  EXPECT_TRUE(closed_);
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));
}

TEST_F(SharedReadsTest, WithoutShareReadsOnlyTheLoopReads) {
  Start();
  PeerSends({Push(1)});
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));
  EXPECT_TRUE(taken_.empty());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (OnLoop().empty() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{1}));
}

TEST_F(SharedReadsTest, GarbageReadOffTheLoopClosesTheConnection) {
  conn_->ShareReads();
  Start();
  const std::string garbage =
      std::string("\x05\x00\x00\x00", 4) + "\xff\xff\xff\xff\xff";  // no Envelope
  asio::write(peer_, asio::buffer(garbage));
  EXPECT_FALSE(conn_->TryReadHere(take_pushes_));
  io_.poll();
  EXPECT_TRUE(conn_->closed());
  EXPECT_TRUE(closed_);
  EXPECT_FALSE(close_reason_.ok());
}

TEST_F(SharedReadsTest, TwoReadersDeliverEveryFrameOnceInOrder) {
  // The loop on its thread and a second thread that keeps trying to read: every frame reaches
  // exactly one of them, the two never handle frames at the same time, and the order holds
  // across both (one in seven frames is one only the loop takes).
  conn_->ShareReads();
  std::mutex order_mu;
  std::vector<uint64_t> order;
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  auto record = [&](const Envelope& m) {
    if (inside.fetch_add(1) != 0) overlapped = true;
    {
      std::lock_guard<std::mutex> lock(order_mu);
      order.push_back(NumberOf(m));
    }
    inside.fetch_sub(1);
  };
  conn_->Start([&](Connection&, Envelope& m) { record(m); },
               [](Connection&, const prism::Status&) {});
  constexpr uint64_t kFrames = 20000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> taken{0};
  std::thread loop([&] {
    auto guard = asio::make_work_guard(io_);
    while (!done.load()) io_.run_for(5ms);
    io_.poll();
  });
  std::thread reader([&] {
    Connection::TakeHere take = [&](Connection&, Envelope& m) {
      if (!m.has_push_task()) return false;
      record(m);
      taken++;
      return true;
    };
    while (!done.load()) {
      if (!conn_->TryReadHere(take)) std::this_thread::yield();
    }
  });
  for (uint64_t i = 0; i < kFrames; i += 100) {
    std::vector<Envelope> batch;
    for (uint64_t j = i; j < i + 100; ++j) batch.push_back(j % 7 == 3 ? Status(j) : Push(j));
    PeerSends(batch);
  }
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(order_mu);
      if (order.size() >= kFrames) break;
    }
    std::this_thread::sleep_for(1ms);
  }
  done = true;
  reader.join();
  loop.join();
  ASSERT_EQ(order.size(), kFrames);
  for (uint64_t i = 0; i < kFrames; ++i) ASSERT_EQ(order[i], i) << "at " << i;
  EXPECT_FALSE(overlapped.load());
  EXPECT_LE(taken.load(), kFrames - kFrames / 7);
}

// With ParseOnArenas, whoever handles a frame can keep it (HoldFrame) past the handler, on
// every path: taken off the loop, read by the loop, or handed to the loop.
TEST_F(SharedReadsTest, AHandlerKeepsItsFrameOnEveryPath) {
  conn_->ShareReads();
  conn_->ParseOnArenas();
  std::vector<std::shared_ptr<Envelope>> held;
  conn_->Start(
      [&](Connection& c, Envelope& m) {
        auto frame = c.HoldFrame();
        EXPECT_EQ(frame.get(), &m);
        held.push_back(frame);
      },
      [](Connection&, const prism::Status&) {});
  Connection::TakeHere take = [&](Connection& c, Envelope& m) {
    if (!m.has_push_task()) return false;
    auto frame = c.HoldFrame();
    EXPECT_EQ(frame.get(), &m);
    held.push_back(frame);
    return true;
  };
  PeerSends({Push(1), Status(2), Push(3)});
  EXPECT_TRUE(conn_->TryReadHere(take));  // 1 taken here; 2 and 3 handed to the loop
  io_.poll();
  PeerSends({Status(4)});
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (held.size() < 4 && std::chrono::steady_clock::now() < deadline)
    io_.run_for(10ms);  // the loop reads 4
  ASSERT_EQ(held.size(), 4u);
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_NE(held[i], nullptr);
    EXPECT_EQ(NumberOf(*held[i]), i + 1);
  }
  EXPECT_EQ(conn_->HoldFrame(), nullptr);  // outside a handler
}

TEST_F(SharedReadsTest, WithoutArenasNoFrameIsHeld) {
  conn_->ShareReads();
  std::vector<bool> nulls;
  conn_->Start([&](Connection& c, Envelope&) { nulls.push_back(c.HoldFrame() == nullptr); },
               [](Connection&, const prism::Status&) {});
  PeerSends({Status(1)});
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (nulls.empty() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(nulls, std::vector<bool>{true});
}

// ClaimReads: while a thread claims the connection, the loop is not woken for incoming frames
// and leaves them to it; it still sees the peer go, and gets what waits once the claim ends.
TEST_F(SharedReadsTest, AClaimedConnectionsFramesAreLeftToTheClaimingThread) {
  conn_->ShareReads();
  Start();
  io_.poll();  // the loop waits on the connection
  conn_->ClaimReads();
  PeerSends({Push(1), Status(2)});
  // The loop runs, but nothing wakes it for these: they stay in the socket.
  io_.run_for(100ms);
  EXPECT_TRUE(OnLoop().empty());
  EXPECT_TRUE(conn_->TryReadHere(take_pushes_));
  EXPECT_EQ(taken_, (std::vector<uint64_t>{1}));
  io_.poll();
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{2}));  // handed to the loop, as ever
  // Frames that come while claimed and are not read go to the loop when the claim ends.
  PeerSends({Status(3)});
  io_.run_for(50ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{2}));
  conn_->ReleaseReads();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (OnLoop().size() < 2 && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{2, 3}));
  // Unclaimed again: the loop reads by itself.
  PeerSends({Push(4)});
  deadline = std::chrono::steady_clock::now() + 10s;
  while (OnLoop().size() < 3 && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{2, 3, 4}));
}

TEST_F(SharedReadsTest, ClaimsNestAndAnUnmatchedReleaseDoesNothing) {
  conn_->ShareReads();
  Start();
  io_.poll();
  conn_->ReleaseReads();  // no claim: ignored (the count does not go below zero)
  conn_->ClaimReads();
  conn_->ClaimReads();
  PeerSends({Status(1)});
  conn_->ReleaseReads();  // one claim remains
  io_.run_for(100ms);
  EXPECT_TRUE(OnLoop().empty());
  conn_->ReleaseReads();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (OnLoop().empty() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{1}));
}

TEST_F(SharedReadsTest, APeerThatGoesWhileTheConnectionIsClaimedIsSeenAtOnce) {
  conn_->ShareReads();
  Start();
  io_.poll();
  conn_->ClaimReads();  // and never released
  PeerSends({Status(1)});
  peer_.close();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!conn_->closed() && std::chrono::steady_clock::now() < deadline) io_.run_for(10ms);
  EXPECT_TRUE(conn_->closed());
  EXPECT_TRUE(closed_);
  EXPECT_EQ(OnLoop(), (std::vector<uint64_t>{1}));  // what came before the end is not lost
  conn_->ReleaseReads();                            // after the close: nothing to do, no crash
}

// Frames larger than the socket's buffer, sent from the loop and from another thread while the
// peer reads slowly and the connection is claimed now and then: every byte arrives, in order.
TEST_F(SharedReadsTest, WritesLargerThanTheSocketTakeArriveWholeAndInOrder) {
  conn_->ShareReads();
  Start();
  io_.poll();
  auto big = [](uint64_t n, size_t bytes) {
    Envelope e = Push(n);
    e.mutable_push_task()->mutable_spec()->set_name(std::string(bytes, static_cast<char>('a' + n)));
    return e;
  };
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop) io_.run_for(5ms);
  });
  conn_->Send(big(1, 3 << 20));
  asio::post(io_, [&] {
    conn_->Send(big(2, 1 << 20));
    conn_->SendBatched(big(3, 10));
  });
  std::thread other([&] {
    conn_->ClaimReads();
    conn_->Send(big(4, 2 << 20));
    conn_->ReleaseReads();
  });
  other.join();
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  std::vector<std::pair<uint64_t, size_t>> got;
  peer_.non_blocking(false);
  while (got.size() < 4) {
    size_t avail = 0;
    char* space = decoder.WritableSpace(64 * 1024, &avail);
    asio::error_code ec;
    size_t n = peer_.read_some(asio::buffer(space, std::min<size_t>(avail, 16 * 1024)), ec);
    ASSERT_FALSE(ec) << ec.message();
    decoder.Commit(n);
    ASSERT_TRUE(decoder
                    .Drain([&](Envelope& m) {
                      got.emplace_back(NumberOf(m), m.push_task().spec().name().size());
                      return true;
                    })
                    .ok());
    std::this_thread::sleep_for(std::chrono::microseconds(200));  // a slow reader
  }
  stop = true;
  loop.join();
  // 1 went first; 2 and 3 in the order the loop queued them; 4 anywhere, but whole.
  ASSERT_EQ(got.size(), 4u);
  std::vector<uint64_t> order;
  for (auto& [n, size] : got) {
    order.push_back(n);
    EXPECT_EQ(size, n == 1 ? (3u << 20) : n == 2 ? (1u << 20) : n == 3 ? 10u : (2u << 20)) << n;
  }
  auto pos = [&](uint64_t n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
  EXPECT_LT(pos(2), pos(3));
  EXPECT_FALSE(conn_->closed());
}

TEST_F(SharedReadsTest, AFrameSentJustBeforeACloseOnTheLoopStillLeaves) {
  conn_->ShareReads();
  Start();
  io_.poll();
  // A refusal, say: sent and closed in one handler.
  asio::post(io_, [&] {
    conn_->Send(Status(7));
    conn_->Close(prism::Status::PermissionDenied("refused"));
  });
  io_.poll();
  EXPECT_TRUE(conn_->closed());
  std::string bytes(4096, '\0');
  asio::error_code ec;
  size_t n = asio::read(peer_, asio::buffer(bytes), ec);  // up to the end of the stream
  EXPECT_EQ(ec, asio::error::eof);
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  size_t avail = 0;
  std::memcpy(decoder.WritableSpace(n, &avail), bytes.data(), n);
  decoder.Commit(n);
  std::vector<uint64_t> got;
  ASSERT_TRUE(decoder
                  .Drain([&](Envelope& m) {
                    got.push_back(NumberOf(m));
                    return true;
                  })
                  .ok());
  EXPECT_EQ(got, std::vector<uint64_t>{7});
}

}  // namespace
}  // namespace prism::rpc

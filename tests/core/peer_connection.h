// For unit tests of the daemon's parts: one end of a socket pair as an rpc::Connection that the
// code under test sends on; the test reads what it was sent from the other end.
#pragma once

#include <gtest/gtest.h>

#include <asio.hpp>
#include <memory>
#include <vector>

#include "rpc/connection.h"
#include "rpc/frame.h"

namespace prism {

class PeerConnection {
 public:
  explicit PeerConnection(asio::io_context& io) : io_(io), other_(io) {
    asio::local::stream_protocol::socket mine(io);
    asio::local::connect_pair(mine, other_);
    other_.non_blocking(true);
    conn = rpc::Connection::Create(std::move(mine));
    conn->Start([](rpc::Connection&, rpc::Envelope&) {}, [](rpc::Connection&, const Status&) {});
  }
  ~PeerConnection() {
    conn->Close(Status::OK());
    io_.poll();
  }
  PeerConnection(const PeerConnection&) = delete;
  PeerConnection& operator=(const PeerConnection&) = delete;

  // The frames sent since the last look.
  std::vector<rpc::Envelope> Frames() {
    io_.poll();
    asio::error_code ec;
    for (;;) {
      size_t avail = 0;
      char* space = decoder_.WritableSpace(4096, &avail);
      size_t n = other_.read_some(asio::buffer(space, avail), ec);
      if (ec) break;
      decoder_.Commit(n);
    }
    std::vector<rpc::Envelope> out;
    Status drained = decoder_.Drain([&](rpc::Envelope& m) {
      out.push_back(std::move(m));
      return true;
    });
    EXPECT_TRUE(drained.ok()) << drained.ToString();
    return out;
  }
  // The one frame sent since the last look (an empty Envelope, and a failure, otherwise).
  rpc::Envelope One() {
    auto f = Frames();
    EXPECT_EQ(f.size(), 1u);
    return f.size() == 1 ? f[0] : rpc::Envelope();
  }

  std::shared_ptr<rpc::Connection> conn;

 private:
  asio::io_context& io_;
  asio::local::stream_protocol::socket other_;
  rpc::FrameDecoder decoder_{rpc::kDefaultMaxFrameBytes};
};

}  // namespace prism

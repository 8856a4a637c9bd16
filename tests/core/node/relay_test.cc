// The relay on loopback: node A's relay socket tunnels to a socket of node B's session through B's
// cluster port (gRPC over the authenticated handshake); bytes go through unchanged both ways.
#include "node/relay.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "base/ids.h"
#include "node/node_cluster.h"
#include "rpc/frame.h"
#include "rpc/grpc_channel.h"

namespace prism {
namespace {

using namespace std::chrono_literals;
constexpr char kToken[] = "relay-token";

std::string TempDir(const char* name) {
  std::string dir = "/tmp/prism-relay-" + std::string(name) + "-XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

bool WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads until `size` bytes came or the peer closed.
std::string ReadUpTo(int fd, size_t size) {
  std::string out;
  char buf[65536];
  while (out.size() < size) {
    ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), size - out.size()), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// An echo server on a Unix socket of node B's session.
class Echo {
 public:
  explicit Echo(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        accepted_++;
        std::thread([c] {
          char buf[65536];
          ssize_t n;
          while ((n = ::recv(c, buf, sizeof(buf), 0)) > 0) {
            if (!WriteAll(c, std::string(buf, static_cast<size_t>(n)))) break;
          }
          ::close(c);
        }).detach();
      }
    });
  }
  ~Echo() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int accepted() const { return accepted_.load(); }

 private:
  int fd_ = -1;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_a_ = TempDir("a");
    dir_b_ = TempDir("b");
    auto a = Relay::Start(dir_a_, kToken);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    relay_a_ = std::move(*a);
    auto b = Relay::Start(dir_b_, kToken);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    relay_b_ = std::move(*b);
    node_b_ = std::make_unique<NodeServer>(std::string(NodeId::kSize, 'b'), relay_b_.get());
    grpc::ServerBuilder builder;
    rpc::ConfigureClusterServer(builder);
    builder.RegisterService(node_b_.get());
    server_b_ = builder.BuildAndStart();
    ASSERT_NE(server_b_, nullptr);
    auto listener = rpc::ClusterListener::Start("127.0.0.1", 0, kToken, server_b_.get());
    ASSERT_TRUE(listener.ok());
    listener_b_ = std::move(*listener);
    address_b_ = "127.0.0.1:" + std::to_string(listener_b_->port());
    echo_ = std::make_unique<Echo>(dir_b_ + "/w-echo.sock");
  }
  void TearDown() override {
    echo_.reset();
    listener_b_.reset();
    if (server_b_) server_b_->Shutdown(std::chrono::system_clock::now() + 1s);
    server_b_.reset();
    relay_b_.reset();
    relay_a_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_a_, ec);
    std::filesystem::remove_all(dir_b_, ec);
  }

  // Opens a tunnel from A's relay socket to `socket_name` on `node`; sends `first` after it.
  int Open(const std::string& node, const std::string& socket_name, const std::string& first) {
    int fd = ConnectUnix(Relay::SocketPath(dir_a_));
    EXPECT_GE(fd, 0);
    rpc::Envelope open;
    open.mutable_relay_open()->set_node_address(node);
    open.mutable_relay_open()->set_socket_name(socket_name);
    std::string bytes;
    rpc::AppendFrame(open, &bytes);
    EXPECT_TRUE(WriteAll(fd, bytes + first));
    return fd;
  }

  // Reads a Refused frame (the relay's answer when it cannot tunnel): its reason.
  static std::string RefusedReason(int fd) {
    std::string bytes = ReadUpTo(fd, 1 << 16);
    rpc::FrameDecoder decoder(1 << 16);
    size_t room = 0;
    char* at = decoder.WritableSpace(bytes.size(), &room);
    std::memcpy(at, bytes.data(), bytes.size());
    decoder.Commit(bytes.size());
    std::string reason = "(no Refused frame)";
    (void)decoder.Drain([&](rpc::Envelope& env) {
      if (env.has_refused()) reason = env.refused().reason();
      return false;
    });
    return reason;
  }

  std::string dir_a_, dir_b_, address_b_;
  std::unique_ptr<Relay> relay_a_, relay_b_;
  std::unique_ptr<NodeServer> node_b_;
  std::unique_ptr<grpc::Server> server_b_;
  std::unique_ptr<rpc::ClusterListener> listener_b_;
  std::unique_ptr<Echo> echo_;
};

TEST_F(RelayTest, BytesGoThroughBothWaysUnchanged) {
  int fd = Open(address_b_, "w-echo.sock", "hello");
  EXPECT_EQ(ReadUpTo(fd, 5), "hello");
  // 8 MiB of patterned bytes, written while the echo comes back.
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131 + 7) & 0xff);
  std::thread writer([&] { EXPECT_TRUE(WriteAll(fd, big)); });
  std::string back = ReadUpTo(fd, big.size());
  writer.join();
  EXPECT_EQ(back.size(), big.size());
  EXPECT_TRUE(back == big);
  EXPECT_EQ(relay_a_->open_tunnels(), 1);
  EXPECT_EQ(relay_b_->open_tunnels(), 1);
  ::close(fd);
  // Closing one end ends the tunnel on both nodes.
  for (int i = 0; i < 500 && (relay_a_->open_tunnels() > 0 || relay_b_->open_tunnels() > 0); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(relay_a_->open_tunnels(), 0);
  EXPECT_EQ(relay_b_->open_tunnels(), 0);
}

TEST_F(RelayTest, ManyTunnelsAtOnceStayApart) {
  std::vector<int> fds;
  for (int i = 0; i < 16; ++i) fds.push_back(Open(address_b_, "w-echo.sock", ""));
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(WriteAll(fds[i], "tunnel-" + std::to_string(100 + i)));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(ReadUpTo(fds[i], 10), "tunnel-" + std::to_string(100 + i));
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(echo_->accepted(), 16);
}

TEST_F(RelayTest, AMissingSocketIsRefusedWithWhy) {
  int fd = Open(address_b_, "w-nobody.sock", "");
  EXPECT_NE(RefusedReason(fd).find("no process listens at w-nobody.sock"), std::string::npos);
  ::close(fd);
}

TEST_F(RelayTest, NamesOutsideTheSessionAreRefused) {
  for (const char* name : {"../b/w-echo.sock", "/tmp/x.sock", "relay.sock", "w-echo", ""}) {
    int fd = Open(address_b_, name, "");
    EXPECT_NE(RefusedReason(fd).find("is not a socket of a node"), std::string::npos) << name;
    ::close(fd);
  }
  EXPECT_EQ(echo_->accepted(), 0);
}

TEST_F(RelayTest, AnUnreachableNodeIsRefusedWithWhy) {
  // A port nothing listens on (B's, once its listener is gone).
  std::string gone = address_b_;
  listener_b_.reset();
  int fd = Open(gone, "w-echo.sock", "");
  std::string why = RefusedReason(fd);
  EXPECT_NE(why.find("cannot reach node " + gone), std::string::npos) << why;
  ::close(fd);
}

TEST_F(RelayTest, AWrongTokenOnTheOtherNodeIsRefused) {
  // Node C: same relay code, another token.
  std::string dir_c = TempDir("c");
  auto c = Relay::Start(dir_c, "another-token");
  ASSERT_TRUE(c.ok());
  NodeServer node_c(std::string(NodeId::kSize, 'c'), c->get());
  grpc::ServerBuilder builder;
  rpc::ConfigureClusterServer(builder);
  builder.RegisterService(&node_c);
  auto server_c = builder.BuildAndStart();
  auto listener = rpc::ClusterListener::Start("127.0.0.1", 0, "another-token", server_c.get());
  ASSERT_TRUE(listener.ok());
  int fd = Open("127.0.0.1:" + std::to_string((*listener)->port()), "w-echo.sock", "");
  std::string why = RefusedReason(fd);
  EXPECT_NE(why.find("a wrong cluster token"), std::string::npos) << why;
  ::close(fd);
  listener->reset();
  server_c->Shutdown(std::chrono::system_clock::now() + 1s);
  c->reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_c, ec);
}

TEST_F(RelayTest, GarbageInsteadOfRelayOpenIsRefused) {
  int fd = ConnectUnix(Relay::SocketPath(dir_a_));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WriteAll(fd, std::string("\xff\xff\xff\x7f", 4) + std::string(64, 'g')));
  EXPECT_NE(RefusedReason(fd).find("relay:"), std::string::npos);
  ::close(fd);
  EXPECT_EQ(relay_a_->open_tunnels(), 0);
}

}  // namespace
}  // namespace prism

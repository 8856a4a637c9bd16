// The cluster's transport between nodes, on loopback in one process: what a call through two
// nodes' relays (a Unix socket, a gRPC stream on the authenticated connection, a Unix socket)
// costs next to a plain Unix socket, and next to a gRPC unary round trip. An echo server on node
// B's session stands in for a worker; the caller writes to node A's relay socket.
//
//   cluster_benchmark [--rounds 5] [--pipelined 200000]
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cluster_floor.h"
#include "node/node_cluster.h"
#include "node/relay.h"
#include "rpc/frame.h"
#include "rpc/grpc_channel.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kToken[] = "bench-token";

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  return fd;
}

void WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) std::exit(1);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void ReadExactly(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) std::exit(1);
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// Echoes every connection on its own thread.
void RunEcho(int listener) {
  while (true) {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    std::thread([c] {
      std::vector<char> buf(1 << 20);
      ssize_t n;
      while ((n = ::recv(c, buf.data(), buf.size(), 0)) > 0) WriteAll(c, buf.data(), size_t(n));
      ::close(c);
    }).detach();
  }
}

using prism::bench::Median;

// Round trips of `size` bytes: microseconds each (median of `rounds` batches of 2,000).
double RoundTripUs(int fd, size_t size, int rounds) {
  std::string msg(size, 'r');
  std::vector<double> per;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < 2000; ++i) {
      WriteAll(fd, msg.data(), msg.size());
      ReadExactly(fd, msg.data(), msg.size());
    }
    per.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 2000);
  }
  return Median(per);
}

// Messages of `size` bytes written by one thread and read back by another: messages per second.
double PipelinedPerSecond(int fd, size_t size, int count, int rounds) {
  std::vector<double> rates;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    std::thread writer([&] {
      std::string batch(size * 100, 'p');
      for (int i = 0; i < count / 100; ++i) WriteAll(fd, batch.data(), batch.size());
    });
    std::vector<char> buf(size * 100);
    for (int i = 0; i < count / 100; ++i) ReadExactly(fd, buf.data(), buf.size());
    writer.join();
    rates.push_back(count / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Median(rates);
}

// Bulk bytes through and back: MB/s of the one-way stream (median of rounds).
double BulkMBps(int fd, size_t total, int rounds) {
  std::vector<double> rates;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    std::thread writer([&] {
      std::string chunk(1 << 20, 'b');
      for (size_t done = 0; done < total; done += chunk.size())
        WriteAll(fd, chunk.data(), chunk.size());
    });
    std::vector<char> buf(1 << 20);
    for (size_t done = 0; done < total; done += buf.size()) ReadExactly(fd, buf.data(), buf.size());
    writer.join();
    rates.push_back(double(total) / 1e6 / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Median(rates);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5, pipelined = 200000;
  CLI::App app{"prism's transport between nodes: the relay next to its floors"};
  app.add_option("--rounds", rounds, "rounds per figure (the median is shown)");
  app.add_option("--pipelined", pipelined, "messages per pipelined round");
  CLI11_PARSE(app, argc, argv);

  std::string dir_a = "/tmp/prism-bench-a-XXXXXX", dir_b = "/tmp/prism-bench-b-XXXXXX";
  if (!mkdtemp(dir_a.data()) || !mkdtemp(dir_b.data())) return 1;
  auto relay_a = prism::Relay::Start(dir_a, kToken);
  auto relay_b = prism::Relay::Start(dir_b, kToken);
  if (!relay_a.ok() || !relay_b.ok()) return 1;
  prism::NodeServer node_b(std::string(16, 'b'), relay_b->get());
  grpc::ServerBuilder builder;
  prism::rpc::ConfigureClusterServer(builder);
  builder.RegisterService(&node_b);
  auto server = builder.BuildAndStart();
  auto listener = prism::rpc::ClusterListener::Start("127.0.0.1", 0, kToken, server.get());
  if (!listener.ok()) return 1;
  std::string address_b = "127.0.0.1:" + std::to_string((*listener)->port());

  std::string echo_path = dir_b + "/w-echo.sock";
  int echo = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", echo_path.c_str());
  if (::bind(echo, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(echo, 16))
    return 1;
  std::thread(RunEcho, echo).detach();

  auto direct = [&] { return ConnectUnix(echo_path); };
  auto relayed = [&] {
    int fd = ConnectUnix(prism::Relay::SocketPath(dir_a));
    prism::rpc::Envelope open;
    open.mutable_relay_open()->set_node_address(address_b);
    open.mutable_relay_open()->set_socket_name("w-echo.sock");
    std::string bytes;
    prism::rpc::AppendFrame(open, &bytes);
    WriteAll(fd, bytes.data(), bytes.size());
    return fd;
  };

  // gRPC's own floor: a unary call on the same authenticated connection kind.
  const double unary_us = prism::bench::GrpcUnaryRoundTripUs(address_b, kToken, rounds);

  int d = direct(), t = relayed();
  std::printf("| figure | direct Unix socket | through two relays (gRPC stream) | ratio |\n");
  std::printf("|---|---|---|---|\n");
  double rd = RoundTripUs(d, 64, rounds), rt = RoundTripUs(t, 64, rounds);
  std::printf("| round trip, 64 B | %.1f us | %.1f us | %.1fx |\n", rd, rt, rt / rd);
  double pd = PipelinedPerSecond(d, 200, pipelined, rounds);
  double pt = PipelinedPerSecond(t, 200, pipelined, rounds);
  std::printf("| pipelined 200 B messages | %.0fk/s | %.0fk/s | %.2f |\n", pd / 1e3, pt / 1e3,
              pt / pd);
  double bd = BulkMBps(d, size_t(256) << 20, rounds), bt = BulkMBps(t, size_t(256) << 20, rounds);
  std::printf("| bulk, 256 MiB each way | %.0f MB/s | %.0f MB/s | %.2f |\n", bd, bt, bt / bd);
  std::printf(
      "\ngRPC unary round trip on the same kind of connection (floor of a call between nodes): "
      "%.1f us\n",
      unary_us);
  ::close(d);
  ::close(t);
  (*listener).reset();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  relay_a->reset();
  relay_b->reset();
  ::close(echo);
  std::error_code ec;
  std::filesystem::remove_all(dir_a, ec);
  std::filesystem::remove_all(dir_b, ec);
  return 0;
}

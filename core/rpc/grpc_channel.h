// gRPC between machines, on connections that authenticate before gRPC speaks. A node's cluster
// port is a plain TCP listener: each connection must first present the protocol version and the
// cluster token in a handshake of at most 64 KiB (cluster.proto's ClusterHello); only then is
// the socket handed to the gRPC server. So an unauthenticated peer can make a node read no more
// than the handshake, and every gRPC call arrives on an authenticated connection.
#pragma once

#include <grpcpp/grpcpp.h>

#include <asio.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace prism::rpc {

/// The largest handshake a listener reads.
inline constexpr uint32_t kMaxHandshakeBytes = 64 << 10;
/// The most header bytes a cluster server reads from a call.
inline constexpr int kMaxHeaderBytes = 16 << 10;
/// The largest message a cluster service accepts or sends.
inline constexpr int kMaxClusterMessageBytes = 64 << 20;

/// "IP:PORT" split and checked: an IPv4 or IPv6 literal or a host name, a port in 1..65535.
struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};
Result<HostPort> ParseHostPort(const std::string& text);

/// The message and header limits and keepalive of a cluster server (it adds no listening port:
/// a ClusterListener hands it its connections).
void ConfigureClusterServer(grpc::ServerBuilder& builder);

/// A node's cluster port: accepts TCP connections on `ip:port`, checks each one's handshake
/// (within `handshake_timeout`), and hands those with the token to `server`. Its own thread.
class ClusterListener {
 public:
  /// Listens on `ip` only (never on every interface); port 0 picks a free one.
  static Result<std::unique_ptr<ClusterListener>> Start(
      const std::string& ip, int port, std::string token, grpc::Server* server,
      std::chrono::milliseconds handshake_timeout = std::chrono::milliseconds(10000));
  ~ClusterListener();  // stops accepting; connections already handed over stay with gRPC
  int port() const { return port_; }
  /// Connections refused so far (bad handshake, wrong token or version, timeout).
  uint64_t refused() const { return refused_.load(); }

 private:
  ClusterListener(std::string token, grpc::Server* server, std::chrono::milliseconds timeout);
  void Accept();
  void Handshake(std::shared_ptr<asio::ip::tcp::socket> sock);

  const std::string token_;
  grpc::Server* server_;
  const std::chrono::milliseconds timeout_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_{io_};
  int port_ = 0;
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

/// Opens a connection to a cluster port and passes its handshake: a connected socket, or why
/// not (the peer's reason when it refused). Retries refused connections until `timeout` when
/// `wait_for_listener` (a head that is still starting).
Result<int> ConnectToCluster(const std::string& target, const std::string& token,
                             std::chrono::milliseconds timeout, bool wait_for_listener = false);

/// A gRPC channel to a cluster port, over an authenticated connection; a broken one is replaced
/// on the next Get() after Reset(). Any thread.
class ClusterChannel {
 public:
  ClusterChannel(std::string target, std::string token);
  /// The channel (connecting first if there is none).
  Result<std::shared_ptr<grpc::Channel>> Get(std::chrono::milliseconds timeout,
                                             bool wait_for_listener = false);
  /// The connection failed: the next Get() makes a new one.
  void Reset();
  const std::string& target() const { return target_; }

 private:
  const std::string target_;
  const std::string token_;
  Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ PRISM_GUARDED_BY(mu_);
};

/// A gRPC status as prism's (the code mapped, the message after `what`), and back.
Status FromGrpc(const grpc::Status& s, const std::string& what);
grpc::Status ToGrpc(const Status& s);

}  // namespace prism::rpc

// The relay: how a process of one node reaches a process of another. A core worker that calls a
// process of another node connects to its own node's relay socket (<session>/relay.sock) and
// names the other node and socket first (RelayOpen); the relay opens a gRPC stream to that node
// (NodeService.Relay, over the cluster's authenticated connections), whose relay connects to the
// named socket there. From then on the bytes go through both ways unchanged: the same framed
// protocol as on one node, the caller's Hello (with the cluster token) first. Between machines
// it is gRPC; within each machine, Unix sockets. The relay runs on a thread of its own.
#pragma once

#include <asio.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "cluster.grpc.pb.h"
#include "rpc/grpc_channel.h"

namespace prism {

class Tunnel;
class ClientTunnel;
class ServerTunnel;

class Relay {
 public:
  /// Listens on <session_dir>/relay.sock; tunnels go to other nodes with `token`.
  static Result<std::unique_ptr<Relay>> Start(const std::string& session_dir, std::string token);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  /// NodeService.Relay: a tunnel from another node to a socket of this node's session.
  grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk>* Accept(
      grpc::CallbackServerContext* ctx);

  /// The socket a process of this node connects to.
  static std::string SocketPath(const std::string& session_dir);
  /// Tunnels open now (both directions), for tests and status.
  int open_tunnels() const { return open_.load(); }

 private:
  Relay(std::string session_dir, std::string token);
  void AcceptLocal();
  /// A local connection named its target: dial the node (off this thread), then tunnel.
  void Open(std::shared_ptr<asio::local::stream_protocol::socket> sock, rpc::RelayOpen open,
            std::string leftover);
  /// The connection (authenticated) to `node_address`, made once and kept; on the dialer thread.
  Result<std::shared_ptr<grpc::Channel>> ChannelTo(const std::string& node_address);
  void DialerLoop();

  friend class Tunnel;
  friend class ClientTunnel;
  friend class ServerTunnel;
  /// A tunnel's connection failed: the next dial to `node_address` connects anew.
  void ForgetChannel(const std::string& node_address);
  std::set<Tunnel*> live_;  // on the relay's thread
  const std::string session_dir_;
  const std::string token_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::local::stream_protocol::acceptor acceptor_{io_};
  std::thread thread_;
  std::atomic<int> open_{0};

  Mutex mu_;
  std::condition_variable cv_;
  bool stopping_ PRISM_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> dials_ PRISM_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<rpc::ClusterChannel>> channels_ PRISM_GUARDED_BY(mu_);
  std::thread dialer_;
};

}  // namespace prism

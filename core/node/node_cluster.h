// This node's place in the cluster: the port other machines reach it on (gRPC, with the cluster
// token), the head's control service when this node is the head, and its link to the control
// service (joining, periodic reports, the cluster's nodes as last heard). An embedded single
// node is a head without a port: its node table is in-process and nothing listens on a network.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "cluster.grpc.pb.h"
#include "control/control_server.h"
#include "control/job_table.h"
#include "control/kv_table.h"
#include "control/node_table.h"
#include "node/cluster_link.h"
#include "node/relay.h"
#include "prism.pb.h"
#include "rpc/grpc_channel.h"

namespace grpc {
class Server;
}

namespace prism {

struct ClusterConfig {
  /// The node's session folder (its relay socket goes there).
  std::string session_dir;
  /// The address this node listens on for other machines (never every interface).
  std::string node_ip = "127.0.0.1";
  /// Its cluster port: 0 picks a free one; -1 none (an embedded single node: no network).
  int port = -1;
  /// The head to join ("IP:PORT"); empty: this node is the head.
  std::string head_address;
  std::string token;
  std::map<std::string, std::string> labels;
  /// How often nodes report to the head, and how long a silent node lives (the head's settings;
  /// nodes take the period from the head).
  std::chrono::milliseconds heartbeat_period{500};
  std::chrono::milliseconds node_dead_after{5000};
};

/// Every node's own service (what other machines ask of this node).
class NodeServer final : public rpc::NodeService::CallbackService {
 public:
  /// `relay`: where tunnels from other nodes go (null: none are taken).
  NodeServer(std::string node_id, prism::Relay* relay)
      : node_id_(std::move(node_id)), relay_(relay) {}
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* ctx, const rpc::PingRequest* req,
                                 rpc::PingReply* reply) override;
  grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk>* Relay(
      grpc::CallbackServerContext* ctx) override;

 private:
  const std::string node_id_;
  prism::Relay* relay_;
};

class NodeCluster {
 public:
  /// Fills a report with what the node has free now (on the event loop).
  using FillReport = std::function<void(rpc::HeartbeatRequest* report)>;
  /// The control service holds this node as dead: it must stop (on the event loop).
  using OnFenced = std::function<void(const std::string& why)>;

  NodeCluster(asio::io_context& io, ClusterConfig config);
  ~NodeCluster();

  /// Set before Start. Runs on the event loop after each period's report is prepared (the view of
  /// the cluster may have changed).
  void set_on_tick(std::function<void()> f) { on_tick_ = std::move(f); }
  /// Set before Start. Runs on the event loop with guest jobs (those the report names) that the
  /// control service says finished.
  void set_on_jobs_finished(std::function<void(std::vector<JobId>)> f) {
    on_jobs_finished_ = std::move(f);
  }

  /// Listens (if the node has a port), serves the control service (the head), and joins.
  /// `self`: the node's entry (id, resources, session); its address, head flag and labels are
  /// filled in here.
  Status Start(rpc::NodeInfo self, FillReport fill, OnFenced on_fenced);
  /// Leaves the cluster and stops listening. Idempotent.
  void Stop(const std::string& reason);

  bool is_head() const { return config_.head_address.empty(); }
  /// "IP:PORT" of the head's control service; empty for an embedded single node.
  std::string address() const;
  /// The node's number in the cluster (1..65535), from the head.
  uint32_t node_index() const { return link_ ? link_->node_index() : 0; }
  /// This node's own cluster address ("IP:PORT"); empty without a port.
  std::string node_address() const;
  /// The port this node listens on (0: none).
  int port() const { return bound_port_; }
  /// The cluster's nodes as this node last heard (the head: its table).
  std::vector<rpc::NodeInfo> Nodes() const;
  /// Changes whenever Nodes() may have (any thread).
  uint64_t nodes_version() const {
    return table_ ? table_->version() : link_ ? link_->version() : 0;
  }
  /// A driver of this node started a job / its job finished: the control service's job table
  /// hears of it (at once on the head; from the link's thread elsewhere, never waiting here).
  void ReportJob(rpc::JobInfo job);
  void ReportJobFinished(const JobId& id);
  /// A key-value request of a process of this node: applied here on the head; elsewhere sent to
  /// the head from the link's thread. `done` runs on the event loop (at once on the head).
  void Kv(const rpc::KvRequest& req, std::function<void(Result<rpc::KvReply>)> done);
  /// A job as the control service's job table holds it (at once on the head; from the link's
  /// thread elsewhere). `done` runs on the event loop.
  void GetJob(const JobId& id, std::function<void(Result<rpc::JobInfo>)> done);

 private:
  void Tick();

  asio::io_context& io_;
  const ClusterConfig config_;
  int bound_port_ = 0;
  FillReport fill_;
  std::function<void()> on_tick_;
  std::function<void(std::vector<JobId>)> on_jobs_finished_;
  std::unique_ptr<NodeTable> table_;        // the head's
  std::unique_ptr<JobTable> jobs_;          // the head's
  std::unique_ptr<KvTable> kv_;             // the head's
  std::unique_ptr<ControlServer> service_;  // the head's, when it has a port
  std::unique_ptr<NodeServer> node_service_;
  std::unique_ptr<RemoteControl> remote_;  // other nodes': the head's control service
  std::unique_ptr<prism::Relay> relay_;    // outlives server_ (its tunnels end on its thread)
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<rpc::ClusterListener> listener_;  // the port; hands connections to server_
  std::unique_ptr<ClusterLink> link_;
  std::unique_ptr<asio::steady_timer> timer_;
  bool stopped_ = false;
};

/// This machine's address as other machines would reach it: the source address of its default
/// route (no packet is sent), else 127.0.0.1.
std::string DefaultNodeIp();

}  // namespace prism

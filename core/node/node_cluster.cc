#include "node/node_cluster.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "base/logging.h"
#include "rpc/grpc_channel.h"

namespace prism {

grpc::ServerUnaryReactor* NodeServer::Ping(grpc::CallbackServerContext* ctx,
                                           const rpc::PingRequest*, rpc::PingReply* reply) {
  auto* reactor = ctx->DefaultReactor();
  reply->set_node_id(node_id_);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk>* NodeServer::Relay(
    grpc::CallbackServerContext* ctx) {
  if (relay_ != nullptr) return relay_->Accept(ctx);
  struct Refuse : grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk> {
    Refuse() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this node relays nothing")); }
    void OnDone() override { delete this; }
  };
  return new Refuse;
}

NodeCluster::NodeCluster(asio::io_context& io, ClusterConfig config)
    : io_(io), config_(std::move(config)) {}

NodeCluster::~NodeCluster() { Stop("the node stopped"); }

Status NodeCluster::Start(rpc::NodeInfo self, FillReport fill, OnFenced on_fenced) {
  fill_ = std::move(fill);
  Membership* control = nullptr;
  if (is_head()) {
    NodeTable::Options options;
    options.heartbeat_period = config_.heartbeat_period;
    options.dead_after = config_.node_dead_after;
    table_ = std::make_unique<NodeTable>(options);
    jobs_ = std::make_unique<JobTable>();
    kv_ = std::make_unique<KvTable>();
    control = table_.get();
  } else {
    PRISM_ASSIGN_OR_RETURN(auto head, rpc::ParseHostPort(config_.head_address));
    remote_ = std::make_unique<RemoteControl>(head.ToString(), config_.token,
                                              std::chrono::milliseconds(5000));
    control = remote_.get();
  }
  if (config_.port >= 0) {
    grpc::ServerBuilder builder;
    rpc::ConfigureClusterServer(builder);
    PRISM_ASSIGN_OR_RETURN(relay_, prism::Relay::Start(config_.session_dir, config_.token));
    node_service_ = std::make_unique<NodeServer>(self.node_id(), relay_.get());
    builder.RegisterService(node_service_.get());
    if (table_) {
      service_ = std::make_unique<ControlServer>(*table_, *jobs_, *kv_);
      builder.RegisterService(service_.get());
    }
    server_ = builder.BuildAndStart();
    if (!server_) return Status::Internal("the cluster's gRPC server did not start");
    auto listener =
        rpc::ClusterListener::Start(config_.node_ip, config_.port, config_.token, server_.get());
    if (!listener.ok()) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
      return listener.status();
    }
    listener_ = std::move(*listener);
    bound_port_ = listener_->port();
  }
  self.set_ip(config_.node_ip);
  self.set_port(bound_port_);
  self.set_is_head(is_head());
  for (const auto& [k, v] : config_.labels) (*self.mutable_labels())[k] = v;
  auto fenced = [this, on_fenced = std::move(on_fenced)](const std::string& why) {
    asio::post(io_, [this, on_fenced, why] {
      if (!stopped_) on_fenced(why);
    });
  };
  link_ = std::make_unique<ClusterLink>(*control, std::move(self), std::move(fenced));
  link_->on_jobs_finished = [this](std::vector<JobId> ended) {
    asio::post(io_, [this, ended = std::move(ended)] {
      if (!stopped_ && on_jobs_finished_) on_jobs_finished_(ended);
    });
  };
  Status joined = link_->Join();
  if (!joined.ok()) {
    link_.reset();
    listener_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    relay_.reset();
    return joined;
  }
  if (config_.port >= 0) {
    PRISM_LOG_INFO("{} on {}:{}", is_head() ? "cluster head" : "joined " + config_.head_address,
                   config_.node_ip, bound_port_);
  }
  timer_ = std::make_unique<asio::steady_timer>(io_);
  Tick();
  return Status::OK();
}

void NodeCluster::Tick() {
  if (stopped_) return;
  rpc::HeartbeatRequest report;
  if (fill_) fill_(&report);
  link_->SetAvailable(report.available(), report.object_store_used());
  link_->SetGuestJobs(report.guest_jobs());
  if (table_) table_->ExpireSilent();
  if (jobs_ && report.guest_jobs_size() > 0 && on_jobs_finished_) {
    rpc::HeartbeatReply ended;
    AddFinishedJobs(*jobs_, report, &ended);
    std::vector<JobId> ids;
    for (const auto& id : ended.finished_jobs()) ids.push_back(JobId::FromBinary(id));
    if (!ids.empty()) on_jobs_finished_(ids);
  }
  if (on_tick_) on_tick_();
  if (stopped_) return;
  timer_->expires_after(link_->period());
  timer_->async_wait([this](const asio::error_code& ec) {
    if (!ec) Tick();
  });
}

void NodeCluster::Stop(const std::string& reason) {
  if (stopped_) return;
  stopped_ = true;
  if (timer_) timer_->cancel();
  if (link_) link_->Leave(reason);
  listener_.reset();
  // Calls complete on gRPC's threads (tunnels on the relay's) without waiting on this loop, so
  // this does not block on it.
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server_.reset();
  relay_.reset();
}

std::string NodeCluster::address() const {
  if (!is_head()) return config_.head_address;
  if (bound_port_ == 0) return "";
  return rpc::HostPort{config_.node_ip, bound_port_}.ToString();
}

void NodeCluster::ReportJob(rpc::JobInfo job) {
  if (jobs_) {
    Status st = jobs_->RegisterJob(job);
    if (!st.ok()) PRISM_LOG_WARN("the job table refused a job: {}", st.ToString());
    return;
  }
  if (!link_ || !remote_) return;
  link_->Post([remote = remote_.get(), job = std::move(job)] {
    Status st = remote->RegisterJob(job);
    if (!st.ok()) PRISM_LOG_WARN("could not register a job with the head: {}", st.ToString());
  });
}

void NodeCluster::ReportJobFinished(const JobId& id) {
  if (jobs_) {
    (void)jobs_->FinishJob(id);
    return;
  }
  if (!link_ || !remote_) return;
  link_->Post([remote = remote_.get(), id] {
    Status st = remote->FinishJob(id);
    if (!st.ok()) PRISM_LOG_INFO("could not tell the head a job finished: {}", st.ToString());
  });
}

void NodeCluster::Kv(const rpc::KvRequest& req, std::function<void(Result<rpc::KvReply>)> done) {
  if (kv_) return done(kv_->Apply(req));
  if (!link_ || !remote_ || stopped_) {
    return done(Status::Unavailable("this node is not connected to the control service"));
  }
  link_->Post([this, remote = remote_.get(), req, done = std::move(done)]() mutable {
    auto reply = remote->Apply(req);
    asio::post(io_, [this, done = std::move(done), reply = std::move(reply)]() mutable {
      if (!stopped_) done(std::move(reply));
    });
  });
}

void NodeCluster::GetJob(const JobId& id, std::function<void(Result<rpc::JobInfo>)> done) {
  if (jobs_) return done(jobs_->GetJob(id));
  if (!link_ || !remote_ || stopped_) {
    return done(Status::Unavailable("this node is not connected to the control service"));
  }
  link_->Post([this, remote = remote_.get(), id, done = std::move(done)]() mutable {
    auto job = remote->GetJob(id);
    asio::post(io_, [this, done = std::move(done), job = std::move(job)]() mutable {
      if (!stopped_) done(std::move(job));
    });
  });
}

std::string NodeCluster::node_address() const {
  return bound_port_ == 0 ? "" : rpc::HostPort{config_.node_ip, bound_port_}.ToString();
}

std::vector<rpc::NodeInfo> NodeCluster::Nodes() const {
  if (table_) return table_->Nodes();
  if (link_) return link_->Nodes();
  return {};
}

std::string DefaultNodeIp() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "127.0.0.1";
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(53);
  // A documentation-range address (RFC 5737): connect() on UDP only picks the route.
  ::inet_pton(AF_INET, "192.0.2.1", &to.sin_addr);
  std::string ip = "127.0.0.1";
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    char buf[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &local.sin_addr, buf, sizeof(buf)) != nullptr) ip = buf;
  }
  ::close(fd);
  return ip;
}

}  // namespace prism

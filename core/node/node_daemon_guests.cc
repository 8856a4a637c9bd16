// The node's side of spillback: another node's processes ask this daemon for leases for their
// job (a guest job here), which it learns from the control service's job table; and the view of
// the cluster its scheduler decides with.
#include "base/logging.h"
#include "node/node_daemon.h"

namespace prism {

void NodeDaemon::GuestLeaseRequest(rpc::Connection& conn, const JobId& job,
                                   const rpc::RequestLease& req) {
  if (workers_.HasJob(job)) {
    leases_.Request(conn, job, req);
    return;
  }
  auto& waiting = guests_waiting_[job];
  waiting.push_back(GuestRequest{conn.shared_from_this(), req});
  if (waiting.size() > 1) return;  // already being looked up
  cluster_->GetJob(
      job, [this, job](Result<rpc::JobInfo> info) { GuestJobArrived(job, std::move(info), 1); });
}

void NodeDaemon::GuestJobArrived(const JobId& job, Result<rpc::JobInfo> info, int tries) {
  auto it = guests_waiting_.find(job);
  if (it == guests_waiting_.end() || stopped_) return;
  if (!info.ok() && info.status().code() == StatusCode::kNotFound && tries < 8) {
    // Its driver's node may not have registered it yet (that goes from its link's thread).
    auto timer = std::make_shared<asio::steady_timer>(
        io_, std::chrono::milliseconds(50 << std::min(tries, 4)));
    timer->async_wait([this, timer, job, tries](const asio::error_code& ec) {
      if (ec || stopped_) return;
      cluster_->GetJob(job, [this, job, tries](Result<rpc::JobInfo> again) {
        GuestJobArrived(job, std::move(again), tries + 1);
      });
    });
    return;
  }
  std::vector<GuestRequest> waiting = std::move(it->second);
  guests_waiting_.erase(it);
  std::string refused;
  if (!info.ok()) {
    refused = "this node cannot learn job " + std::to_string(JobIdToInt(job)) +
              " from the control service: " + info.status().message();
  } else if (info->state() == rpc::JOB_FINISHED) {
    refused = "job " + std::to_string(JobIdToInt(job)) + " has ended";
  } else if (!workers_.HasJob(job)) {
    Job guest = WorkerPool::GuestJobOf(*info);
    PRISM_LOG_INFO("job {} (driver on {}) runs work here", JobIdToInt(job), info->hostname());
    workers_.AddJob(std::move(guest));
  }
  for (GuestRequest& g : waiting) {
    auto from = std::static_pointer_cast<rpc::Connection>(g.from.lock());
    if (!from || from->closed()) continue;
    if (refused.empty()) {
      leases_.Request(*from, job, g.req);
      continue;
    }
    rpc::Envelope env;
    env.mutable_lease_rejected()->set_request_id(g.req.request_id());
    env.mutable_lease_rejected()->set_kind(rpc::ERROR_SYSTEM);
    env.mutable_lease_rejected()->set_message(refused);
    from->Send(env);
  }
}

void NodeDaemon::ForwardGuestOutput(const Job& job, rpc::Envelope& msg) {
  if (job.driver_worker.IsNil()) return;
  for (const auto& [conn, peer] : conns_) {
    if (peer.role != rpc::ROLE_REMOTE_CALLER || peer.job != job.id ||
        peer.worker != job.driver_worker || conn->closed())
      continue;
    const std::string ip = ", ip=" + view_.self.ip();
    for (auto& line : *msg.mutable_worker_output()->mutable_lines()) {
      std::string* label = line.mutable_label();
      if (!label->empty() && label->back() == ')') label->insert(label->size() - 1, ip);
    }
    conn->Send(msg);
    return;
  }
}

void NodeDaemon::RefreshClusterView() {
  UpdateClusterView();
  // Requests waiting here may fit where another node now has room.
  if (!stopped_ && !leases_.pending().empty()) Schedule();
}

const ClusterView& NodeDaemon::Cluster() {
  if (cluster_ && cluster_->nodes_version() != view_source_) UpdateClusterView();
  return view_;
}

const ClusterView& NodeDaemon::FreshCluster() {
  if (std::chrono::steady_clock::now() - view_updated_ > std::chrono::milliseconds(50))
    UpdateClusterView();
  return view_;
}

void NodeDaemon::UpdateClusterView() {
  view_updated_ = std::chrono::steady_clock::now();
  view_source_ = cluster_->nodes_version();  // (read first: a change meanwhile is seen next time)
  std::vector<rpc::NodeInfo> nodes = cluster_->Nodes();
  view_.others = false;
  for (const rpc::NodeInfo& n : nodes) {
    if (n.node_id() == view_.self.node_id()) {
      view_.self.set_ip(n.ip());
      view_.self.set_port(n.port());
      continue;
    }
    if (n.state() == rpc::NODE_ALIVE && n.port() > 0) view_.others = true;
  }
  view_.nodes = std::move(nodes);
  view_.version++;
}

}  // namespace prism

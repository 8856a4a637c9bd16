#include "node/cluster_link.h"

#include <utility>

#include "base/logging.h"
#include "rpc/frame.h"

namespace prism {

ClusterLink::ClusterLink(Membership& control, rpc::NodeInfo self,
                         std::function<void(const std::string&)> on_fenced)
    : control_(control), self_(std::move(self)), on_fenced_(std::move(on_fenced)) {
  next_.set_node_id(self_.node_id());
  *next_.mutable_available() = self_.total();
  nodes_.push_back(self_);
}

ClusterLink::~ClusterLink() { Leave("the node stopped"); }

Status ClusterLink::Join() {
  rpc::RegisterNodeRequest req;
  req.set_protocol_version(rpc::kProtocolVersion);
  *req.mutable_node() = self_;
  rpc::RegisterNodeReply reply;
  PRISM_RETURN_IF_ERROR(control_.Register(req, &reply));
  {
    MutexLock lock(mu_);
    joined_ = true;
    node_index_ = reply.node_index();
    if (reply.heartbeat_period_ms() > 0) {
      period_ = std::chrono::milliseconds(reply.heartbeat_period_ms());
    }
  }
  Report();  // the first view, before the node takes work
  thread_ = std::thread([this] {
    UniqueLock lock(mu_);
    auto next = std::chrono::steady_clock::now() + period_;
    while (!leaving_) {
      cv_.wait_until(lock, next, [&]() PRISM_REQUIRES(mu_) { return leaving_ || !tasks_.empty(); });
      if (leaving_) break;
      // Tasks in order, but the report goes out when it is due even while tasks keep coming
      // (a slow or busy head must not make this node miss its reports and be declared dead).
      while (!tasks_.empty() && !leaving_ && std::chrono::steady_clock::now() < next) {
        auto task = std::move(tasks_.front());
        tasks_.pop_front();
        lock.unlock();
        task();
        lock.lock();
      }
      if (leaving_ || std::chrono::steady_clock::now() < next) continue;
      lock.unlock();
      Report();
      lock.lock();
      next = std::chrono::steady_clock::now() + period_;
    }
  });
  return Status::OK();
}

void ClusterLink::Report() {
  rpc::HeartbeatRequest req;
  {
    MutexLock lock(mu_);
    req = next_;
  }
  rpc::HeartbeatReply reply;
  Status st = control_.Heartbeat(req, &reply);
  bool fenced = false;
  {
    MutexLock lock(mu_);
    if (!st.ok()) {
      if (head_reachable_) PRISM_LOG_WARN("the control service did not answer: {}", st.ToString());
      head_reachable_ = false;
      return;
    }
    if (!head_reachable_) PRISM_LOG_INFO("the control service answers again");
    head_reachable_ = true;
    if (reply.known()) {
      nodes_.assign(reply.nodes().begin(), reply.nodes().end());
      version_++;
    } else {
      fenced = !leaving_;
    }
  }
  if (fenced && on_fenced_) on_fenced_(reply.why());
  if (!fenced && reply.finished_jobs_size() > 0 && on_jobs_finished) {
    std::vector<JobId> ended;
    for (const auto& id : reply.finished_jobs()) {
      if (JobId::IsValidBinary(id)) ended.push_back(JobId::FromBinary(id));
    }
    on_jobs_finished(std::move(ended));
  }
}

void ClusterLink::SetAvailable(
    const google::protobuf::RepeatedPtrField<rpc::ResourceAmount>& available, uint64_t store_used) {
  MutexLock lock(mu_);
  *next_.mutable_available() = available;
  next_.set_object_store_used(store_used);
}

void ClusterLink::SetGuestJobs(const google::protobuf::RepeatedPtrField<std::string>& jobs) {
  MutexLock lock(mu_);
  *next_.mutable_guest_jobs() = jobs;
}

std::vector<rpc::NodeInfo> ClusterLink::Nodes() const {
  MutexLock lock(mu_);
  return nodes_;
}

void ClusterLink::Post(std::function<void()> task) {
  {
    MutexLock lock(mu_);
    if (leaving_) return;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void ClusterLink::Leave(const std::string& reason) {
  bool was_joined = false;
  {
    MutexLock lock(mu_);
    if (leaving_) return;
    leaving_ = true;
    was_joined = joined_;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!was_joined) return;
  rpc::UnregisterNodeRequest req;
  req.set_node_id(self_.node_id());
  req.set_reason(reason);
  Status st = control_.Unregister(req);
  if (!st.ok())
    PRISM_LOG_INFO("could not tell the control service this node leaves: {}", st.ToString());
}

}  // namespace prism

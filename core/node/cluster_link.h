// A node's link to the control service: it joins the cluster, reports on a period (it lives, and
// what it has free), and keeps the cluster's nodes as the control service last sent them. The
// reports go from a thread of their own, so a slow head never holds up the node's event loop.
#pragma once

#include <prism/ids.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "control/node_table.h"
#include "prism.pb.h"

namespace prism {

class ClusterLink {
 public:
  /// `control`: the head's node table (in-process on the head, RemoteControl elsewhere).
  /// `on_fenced` runs on the link's thread when the control service holds this node as dead.
  ClusterLink(Membership& control, rpc::NodeInfo self,
              std::function<void(const std::string& why)> on_fenced);
  /// Runs on the link's thread with the guest jobs the control service says finished. Set
  /// before Join.
  std::function<void(std::vector<JobId>)> on_jobs_finished;
  ~ClusterLink();
  ClusterLink(const ClusterLink&) = delete;
  ClusterLink& operator=(const ClusterLink&) = delete;

  /// Joins the cluster (blocking), then starts reporting. An error: the node is not in it.
  Status Join();
  /// What the next report says this node has free.
  void SetAvailable(const google::protobuf::RepeatedPtrField<rpc::ResourceAmount>& available,
                    uint64_t store_used);
  /// The jobs of other nodes' drivers this node runs workers for (the next report asks which
  /// ended).
  void SetGuestJobs(const google::protobuf::RepeatedPtrField<std::string>& jobs);
  /// The cluster's nodes as last heard (this node alone until the first report is answered).
  std::vector<rpc::NodeInfo> Nodes() const;
  /// Changes with every answer that brought the nodes anew.
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  /// Runs `task` on the link's thread, in order with the other tasks and before the next report
  /// (calls to the control service that must not wait on the event loop). Dropped after Leave.
  void Post(std::function<void()> task);
  /// Leaves the cluster (best effort, once) and stops reporting. Idempotent.
  void Leave(const std::string& reason);
  std::chrono::milliseconds period() const { return period_; }
  /// The node's number in the cluster (from the head, at Join).
  uint32_t node_index() const { return node_index_; }

 private:
  void Report();

  Membership& control_;
  const rpc::NodeInfo self_;
  std::function<void(const std::string&)> on_fenced_;
  std::chrono::milliseconds period_{500};
  uint32_t node_index_ = 0;
  std::atomic<uint64_t> version_{0};
  mutable Mutex mu_;
  std::condition_variable cv_;
  bool joined_ PRISM_GUARDED_BY(mu_) = false;
  bool leaving_ PRISM_GUARDED_BY(mu_) = false;
  bool head_reachable_ PRISM_GUARDED_BY(mu_) = true;
  rpc::HeartbeatRequest next_ PRISM_GUARDED_BY(mu_);
  std::vector<rpc::NodeInfo> nodes_ PRISM_GUARDED_BY(mu_);
  std::deque<std::function<void()>> tasks_ PRISM_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace prism

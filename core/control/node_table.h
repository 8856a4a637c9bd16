// The control service's node table: which nodes are in the cluster, where they listen, what
// they have (in all and free now), their labels, and whether they live. Nodes join with
// Register, report with Heartbeat, leave with Unregister; one not heard from for `dead_after`
// is dead. A dead node stays dead: its id is never taken back (it must restart as a new node).
#pragma once

#include <prism/ids.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "cluster.pb.h"

namespace prism {

/// The node table as a node reaches it: in-process on the head (NodeTable itself), over gRPC
/// everywhere else (RemoteControl). Blocking; any thread.
class Membership {
 public:
  virtual ~Membership() = default;
  virtual Status Register(const rpc::RegisterNodeRequest& req, rpc::RegisterNodeReply* reply) = 0;
  virtual Status Heartbeat(const rpc::HeartbeatRequest& req, rpc::HeartbeatReply* reply) = 0;
  virtual Status Unregister(const rpc::UnregisterNodeRequest& req) = 0;
  virtual Status ListNodes(rpc::ListNodesReply* reply) = 0;
};

class NodeTable final : public Membership {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    std::chrono::milliseconds heartbeat_period{500};
    std::chrono::milliseconds dead_after{5000};
    /// The dead kept for the record (status, nodes()); older ones are forgotten.
    size_t max_dead_kept = 1000;
    size_t max_nodes = 10000;
    std::function<Clock::time_point()> now = [] { return Clock::now(); };
  };
  explicit NodeTable(Options options);

  /// A node joins. Refused: another protocol version, a malformed entry, an id already in the
  /// table (alive, or dead: fenced). A node at the address of one still listed alive replaces
  /// it (that one is gone: its port is taken by the newcomer).
  Status Register(const rpc::RegisterNodeRequest& req, rpc::RegisterNodeReply* reply) override;
  /// The node lives; its free resources are these. A node the table holds as dead, or never
  /// had, is answered `known = false`. The reply carries the whole table.
  Status Heartbeat(const rpc::HeartbeatRequest& req, rpc::HeartbeatReply* reply) override;
  /// The node leaves (it stops): dead, with `reason`.
  Status Unregister(const rpc::UnregisterNodeRequest& req) override;
  Status ListNodes(rpc::ListNodesReply* reply) override;

  /// Marks dead every node not heard from for `dead_after`; returns them.
  std::vector<rpc::NodeInfo> ExpireSilent();
  /// Every node, in the order they joined (the living and the dead kept).
  std::vector<rpc::NodeInfo> Nodes() const;
  size_t alive() const;
  const Options& options() const { return options_; }
  /// Changes with every change to the table (a node joined, reported, left, died).
  uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  struct Entry {
    rpc::NodeInfo info;
    Clock::time_point last_heard;
    uint64_t order = 0;
  };
  void MarkDead(Entry& e, const std::string& why) PRISM_REQUIRES(mu_);
  /// Drops the oldest dead beyond `max_dead_kept` (not while iterating nodes_).
  void ForgetOldDead() PRISM_REQUIRES(mu_);
  void FillNodes(google::protobuf::RepeatedPtrField<rpc::NodeInfo>* out) const PRISM_REQUIRES(mu_);

  const Options options_;
  std::atomic<uint64_t> version_{0};
  mutable Mutex mu_;
  std::map<NodeId, Entry> nodes_ PRISM_GUARDED_BY(mu_);
  std::deque<NodeId> dead_order_ PRISM_GUARDED_BY(mu_);  // oldest first, to forget
  uint64_t next_order_ PRISM_GUARDED_BY(mu_) = 0;
  uint32_t next_index_ PRISM_GUARDED_BY(mu_) = 1;  // node indexes, 1..65535, then round again
};

/// Checks a node's entry as it asks to join: its id, address, resources and labels.
Status CheckNodeInfo(const rpc::NodeInfo& info);

}  // namespace prism

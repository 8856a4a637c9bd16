// Several nodes of one cluster on this machine, for tests: the C++ face of Python's
// prism.cluster_utils.Cluster (Ray's ray.cluster_utils.Cluster). Each node is a `prism start`
// daemon with its own session folder and cluster port on 127.0.0.1; their folders go under a
// private root, which this process uses ($PRISM_TMPDIR) for as long as the cluster lives, so
// prism::Init({.address = cluster.address()}) finds the head.
#pragma once

#include <prism/options.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace prism::cluster_utils {

/// How to start a node (as `prism start` takes it).
struct NodeArgs {
  double num_cpus = 1;
  int num_gpus = 0;
  std::map<std::string, double> resources;  // custom resources
  std::map<std::string, std::string> labels;
  uint64_t object_store_memory = 64ull << 20;  // bytes (small: tests start several nodes)
  /// The head's: how often nodes report, and after how long a silent node is dead (0: default).
  int heartbeat_ms = 0;
  int node_dead_after_ms = 0;
};

/// A node of a Cluster.
struct ClusterNode {
  std::string node_id;  // hex
  std::string address;  // its cluster port, "IP:PORT"
  std::string session_dir;
  int pid = 0;
  bool is_head = false;
  /// Whether its daemon process still runs.
  bool Alive() const;
};

class Cluster {
 public:
  /// Starts the head. Throws RuntimeError when it does not start.
  explicit Cluster(const NodeArgs& head = {});
  /// Stops every node (Shutdown).
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  /// The head's "IP:PORT".
  const std::string& address() const { return head_.address; }
  const ClusterNode& head() const { return head_; }
  /// Starts a node that joins the head; with `wait`, returns once the head lists it alive.
  ClusterNode AddNode(const NodeArgs& args = {}, bool wait = true);
  /// Stops a node: gracefully (it leaves at once), or by SIGKILL (the head declares it dead once
  /// it has been silent long enough).
  void RemoveNode(const ClusterNode& node, bool allow_graceful = true);
  /// Waits until the head lists every node started here (and not removed) alive.
  void WaitForNodes(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// The cluster's nodes as the head lists them (the dead included).
  std::vector<NodeInfo> Nodes() const;
  /// Stops every node and removes the private root. Idempotent.
  void Shutdown();

 private:
  ClusterNode Start(const NodeArgs& args, bool head);

  std::string root_;
  std::optional<std::string> saved_tmpdir_;
  std::string token_;
  ClusterNode head_;
  std::vector<ClusterNode> nodes_;  // the others, alive
  bool shut_down_ = false;
};

}  // namespace prism::cluster_utils

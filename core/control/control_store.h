// The control store: the cluster's directory of nodes and jobs. In this version it lives in
// the head node daemon's memory; persistence (SQLite) and the gRPC face for other nodes come
// with multi-node clusters.
#pragma once

#include <prism/ids.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "base/resources.h"

namespace prism {

struct JobRecord {
  JobId id;
  pid_t driver_pid = -1;
  std::chrono::system_clock::time_point started;
  bool alive = true;
};

struct NodeRecord {
  NodeId id;
  ResourceSet total;
  std::string socket_path;
};

/// Event-loop thread only.
class ControlStore {
 public:
  JobId AddJob(pid_t driver_pid);
  void FinishJob(const JobId& job);
  void AddNode(NodeRecord node);
  const std::map<NodeId, NodeRecord>& nodes() const { return nodes_; }
  size_t alive_jobs() const;

 private:
  uint32_t next_job_ = 1;
  std::map<JobId, JobRecord> jobs_;
  std::map<NodeId, NodeRecord> nodes_;
};

}  // namespace prism

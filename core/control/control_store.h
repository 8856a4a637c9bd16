// The control store: the cluster's jobs. It lives in the head node daemon's memory (the nodes are
// the NodeTable's); persistence (SQLite) comes with the head's restarts.
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

/// Event-loop thread only.
class ControlStore {
 public:
  /// A cluster-unique job id: the node's index in its high 16 bits, a count in the low 16.
  JobId AddJob(pid_t driver_pid);
  void set_node_index(uint32_t index) { node_index_ = index & 0xffff; }
  void FinishJob(const JobId& job);
  size_t alive_jobs() const;

 private:
  uint32_t node_index_ = 0;
  uint32_t next_job_ = 1;
  std::map<JobId, JobRecord> jobs_;
};

}  // namespace prism

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
  JobId AddJob(pid_t driver_pid);
  void FinishJob(const JobId& job);
  size_t alive_jobs() const;

 private:
  uint32_t next_job_ = 1;
  std::map<JobId, JobRecord> jobs_;
};

}  // namespace prism

#include "control/control_store.h"

#include "base/ids.h"

namespace prism {

JobId ControlStore::AddJob(pid_t driver_pid) {
  JobId id = JobIdFromInt((node_index_ << 16) | next_job_);
  next_job_ = next_job_ >= 0xffff ? 1 : next_job_ + 1;
  jobs_[id] = JobRecord{id, driver_pid, std::chrono::system_clock::now(), true};
  return id;
}

void ControlStore::FinishJob(const JobId& job) {
  auto it = jobs_.find(job);
  if (it != jobs_.end()) it->second.alive = false;
}

size_t ControlStore::alive_jobs() const {
  size_t n = 0;
  for (const auto& [id, j] : jobs_) n += j.alive ? 1 : 0;
  return n;
}

}  // namespace prism

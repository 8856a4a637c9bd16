#include "control/job_table.h"

#include <algorithm>
#include <chrono>

#include "base/logging.h"

namespace prism {
namespace {

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr int kMaxListEntries = 10000;  // argv, env, code search path

}  // namespace

Status JobTable::RegisterJob(const rpc::JobInfo& job) {
  if (!JobId::IsValidBinary(job.job_id())) {
    return Status::InvalidArgument("a job id has " + std::to_string(JobId::kSize) + " bytes");
  }
  if (job.argv_size() > kMaxListEntries || job.env_size() > kMaxListEntries ||
      job.code_search_path_size() > kMaxListEntries || job.launch_prefix_size() > kMaxListEntries) {
    return Status::InvalidArgument("a job's argv, env, code search path or launch prefix has " +
                                   std::string("more than 10,000 entries"));
  }
  JobId id = JobId::FromBinary(job.job_id());
  MutexLock lock(mu_);
  if (auto it = jobs_.find(id); it != jobs_.end()) {
    if (it->second.driver_node_id() == job.driver_node_id() &&
        it->second.driver_pid() == job.driver_pid()) {
      return Status::OK();  // the same job again (a retried registration)
    }
    return Status::AlreadyExists("job " + id.Hex() + " is already registered by another driver");
  }
  rpc::JobInfo& j = jobs_[id];
  j = job;
  j.set_state(rpc::JOB_RUNNING);
  j.set_start_unix_ms(NowUnixMs());
  j.clear_end_unix_ms();
  order_.push_back(id);
  PRISM_LOG_INFO("job {} registered (driver pid {} on {})", id.Hex(), j.driver_pid(), j.hostname());
  return Status::OK();
}

Status JobTable::FinishJob(const JobId& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("no job " + id.Hex() + " in the cluster");
  if (it->second.state() == rpc::JOB_FINISHED) return Status::OK();
  it->second.set_state(rpc::JOB_FINISHED);
  it->second.set_end_unix_ms(NowUnixMs());
  finished_.push_back(id);
  while (finished_.size() > max_finished_kept_) {
    JobId old = finished_.front();
    finished_.pop_front();
    jobs_.erase(old);
    order_.erase(std::remove(order_.begin(), order_.end(), old), order_.end());
  }
  return Status::OK();
}

void AddFinishedJobs(JobDirectory& jobs, const rpc::HeartbeatRequest& req,
                     rpc::HeartbeatReply* reply) {
  int read = 0;
  for (const std::string& id : req.guest_jobs()) {
    if (++read > 1000) break;
    if (!JobId::IsValidBinary(id)) continue;
    auto job = jobs.GetJob(JobId::FromBinary(id));
    if (!job.ok() || job->state() == rpc::JOB_FINISHED) reply->add_finished_jobs(id);
  }
}

Result<rpc::JobInfo> JobTable::GetJob(const JobId& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("no job " + id.Hex() + " in the cluster");
  return it->second;
}

Status JobTable::ListJobs(rpc::ListJobsReply* reply) {
  MutexLock lock(mu_);
  for (const JobId& id : order_) *reply->add_jobs() = jobs_.at(id);
  return Status::OK();
}

}  // namespace prism

// The control service's job table: every job of the cluster, its driver (node, process,
// machine), and how its workers start, so that a node other than the driver's can start them.
// Nodes register the jobs their drivers start and say when they finish.
#pragma once

#include <prism/ids.h>

#include <cstddef>
#include <deque>
#include <map>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "cluster.pb.h"

namespace prism {

/// The job table as a node reaches it: in-process on the head (JobTable), over gRPC elsewhere
/// (RemoteControl). Blocking; any thread.
class JobDirectory {
 public:
  virtual ~JobDirectory() = default;
  virtual Status RegisterJob(const rpc::JobInfo& job) = 0;
  virtual Status FinishJob(const JobId& id) = 0;
  virtual Result<rpc::JobInfo> GetJob(const JobId& id) = 0;
  virtual Status ListJobs(rpc::ListJobsReply* reply) = 0;
};

/// The jobs among `req.guest_jobs` (at most 1000 read) that finished or that the directory does
/// not know: the heartbeat's answer to a node running their workers.
void AddFinishedJobs(JobDirectory& jobs, const rpc::HeartbeatRequest& req,
                     rpc::HeartbeatReply* reply);

class JobTable final : public JobDirectory {
 public:
  /// `max_finished_kept`: the finished jobs kept for the record; older ones are forgotten.
  explicit JobTable(size_t max_finished_kept = 1000) : max_finished_kept_(max_finished_kept) {}

  /// Refused: a malformed entry, or the id of another job (the same job again is harmless).
  Status RegisterJob(const rpc::JobInfo& job) override;
  /// NotFound for a job the table does not have; finishing twice is harmless.
  Status FinishJob(const JobId& id) override;
  Result<rpc::JobInfo> GetJob(const JobId& id) override;
  /// Every job, in the order they were registered.
  Status ListJobs(rpc::ListJobsReply* reply) override;

 private:
  const size_t max_finished_kept_;
  mutable Mutex mu_;
  std::map<JobId, rpc::JobInfo> jobs_ PRISM_GUARDED_BY(mu_);
  std::deque<JobId> order_ PRISM_GUARDED_BY(mu_);     // registration order
  std::deque<JobId> finished_ PRISM_GUARDED_BY(mu_);  // oldest first, to forget
};

}  // namespace prism

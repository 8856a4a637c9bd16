// The control service as other machines reach it: gRPC over the node table (and, as the cluster
// grows, the other tables). Calls arrive on connections that passed the cluster's handshake
// (rpc::ClusterListener) and complete on gRPC's threads; the tables lock for themselves.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "cluster.grpc.pb.h"
#include "control/job_table.h"
#include "control/kv_table.h"
#include "control/node_table.h"
#include "rpc/grpc_channel.h"

namespace prism {

class ControlServer final : public rpc::ControlService::CallbackService {
 public:
  ControlServer(Membership& table, JobDirectory& jobs, KvStore& kv)
      : table_(table), jobs_(jobs), kv_(kv) {}

  grpc::ServerUnaryReactor* RegisterNode(grpc::CallbackServerContext* ctx,
                                         const rpc::RegisterNodeRequest* req,
                                         rpc::RegisterNodeReply* reply) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const rpc::HeartbeatRequest* req,
                                      rpc::HeartbeatReply* reply) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* ctx,
                                      const rpc::ListNodesRequest* req,
                                      rpc::ListNodesReply* reply) override;
  grpc::ServerUnaryReactor* UnregisterNode(grpc::CallbackServerContext* ctx,
                                           const rpc::UnregisterNodeRequest* req,
                                           rpc::UnregisterNodeReply* reply) override;
  grpc::ServerUnaryReactor* RegisterJob(grpc::CallbackServerContext* ctx, const rpc::JobInfo* req,
                                        rpc::JobReply* reply) override;
  grpc::ServerUnaryReactor* FinishJob(grpc::CallbackServerContext* ctx, const rpc::JobRequest* req,
                                      rpc::JobReply* reply) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const rpc::JobRequest* req,
                                   rpc::JobInfo* reply) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const rpc::ListJobsRequest* req,
                                     rpc::ListJobsReply* reply) override;
  grpc::ServerUnaryReactor* Kv(grpc::CallbackServerContext* ctx, const rpc::KvRequest* req,
                               rpc::KvReply* reply) override;

 private:
  Membership& table_;
  JobDirectory& jobs_;
  KvStore& kv_;
};

/// The control service of a head at "ip:port", as a node (or a tool) calls it. Each call waits
/// at most `timeout` (joining three times that, for a head that is still starting; leaving at
/// most a second).
class RemoteControl final : public Membership, public JobDirectory, public KvStore {
 public:
  RemoteControl(const std::string& target, const std::string& token,
                std::chrono::milliseconds timeout);

  Status Register(const rpc::RegisterNodeRequest& req, rpc::RegisterNodeReply* reply) override;
  Status Heartbeat(const rpc::HeartbeatRequest& req, rpc::HeartbeatReply* reply) override;
  Status Unregister(const rpc::UnregisterNodeRequest& req) override;
  Status ListNodes(rpc::ListNodesReply* reply) override;
  Status RegisterJob(const rpc::JobInfo& job) override;
  Status FinishJob(const JobId& id) override;
  Result<rpc::JobInfo> GetJob(const JobId& id) override;
  Status ListJobs(rpc::ListJobsReply* reply) override;
  Result<rpc::KvReply> Apply(const rpc::KvRequest& req) override;

 private:
  /// One call on the head's channel: connects first if need be; a broken connection is dropped
  /// and the call made once more on a new one.
  template <typename Call>
  Status Invoke(std::chrono::milliseconds timeout, bool wait_for_head, const std::string& what,
                Call&& call);

  const std::chrono::milliseconds timeout_;
  rpc::ClusterChannel channel_;
};

}  // namespace prism

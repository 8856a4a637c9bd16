#include "control/control_server.h"

#include <algorithm>

#include "rpc/grpc_channel.h"

namespace prism {

namespace {

// Answers a call at once with what `serve` returns.
template <typename Serve>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, Serve&& serve) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpc(serve()));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* ControlServer::RegisterNode(grpc::CallbackServerContext* ctx,
                                                      const rpc::RegisterNodeRequest* req,
                                                      rpc::RegisterNodeReply* reply) {
  return Answer(ctx, [&] { return table_.Register(*req, reply); });
}

grpc::ServerUnaryReactor* ControlServer::Heartbeat(grpc::CallbackServerContext* ctx,
                                                   const rpc::HeartbeatRequest* req,
                                                   rpc::HeartbeatReply* reply) {
  return Answer(ctx, [&] {
    Status st = table_.Heartbeat(*req, reply);
    if (st.ok() && reply->known()) AddFinishedJobs(jobs_, *req, reply);
    return st;
  });
}

grpc::ServerUnaryReactor* ControlServer::ListNodes(grpc::CallbackServerContext* ctx,
                                                   const rpc::ListNodesRequest*,
                                                   rpc::ListNodesReply* reply) {
  return Answer(ctx, [&] { return table_.ListNodes(reply); });
}

grpc::ServerUnaryReactor* ControlServer::UnregisterNode(grpc::CallbackServerContext* ctx,
                                                        const rpc::UnregisterNodeRequest* req,
                                                        rpc::UnregisterNodeReply*) {
  return Answer(ctx, [&] { return table_.Unregister(*req); });
}

grpc::ServerUnaryReactor* ControlServer::RegisterJob(grpc::CallbackServerContext* ctx,
                                                     const rpc::JobInfo* req, rpc::JobReply*) {
  return Answer(ctx, [&] { return jobs_.RegisterJob(*req); });
}

grpc::ServerUnaryReactor* ControlServer::FinishJob(grpc::CallbackServerContext* ctx,
                                                   const rpc::JobRequest* req, rpc::JobReply*) {
  return Answer(ctx, [&] {
    if (!JobId::IsValidBinary(req->job_id())) return Status::InvalidArgument("not a job id");
    return jobs_.FinishJob(JobId::FromBinary(req->job_id()));
  });
}

grpc::ServerUnaryReactor* ControlServer::GetJob(grpc::CallbackServerContext* ctx,
                                                const rpc::JobRequest* req, rpc::JobInfo* reply) {
  return Answer(ctx, [&] {
    if (!JobId::IsValidBinary(req->job_id())) return Status::InvalidArgument("not a job id");
    auto job = jobs_.GetJob(JobId::FromBinary(req->job_id()));
    if (!job.ok()) return job.status();
    *reply = std::move(*job);
    return Status::OK();
  });
}

grpc::ServerUnaryReactor* ControlServer::ListJobs(grpc::CallbackServerContext* ctx,
                                                  const rpc::ListJobsRequest*,
                                                  rpc::ListJobsReply* reply) {
  return Answer(ctx, [&] { return jobs_.ListJobs(reply); });
}

grpc::ServerUnaryReactor* ControlServer::Kv(grpc::CallbackServerContext* ctx,
                                            const rpc::KvRequest* req, rpc::KvReply* reply) {
  return Answer(ctx, [&] {
    auto r = kv_.Apply(*req);
    if (!r.ok()) return r.status();
    *reply = std::move(*r);
    return Status::OK();
  });
}

RemoteControl::RemoteControl(const std::string& target, const std::string& token,
                             std::chrono::milliseconds timeout)
    : timeout_(timeout), channel_(target, token) {}

template <typename Call>
Status RemoteControl::Invoke(std::chrono::milliseconds timeout, bool wait_for_head,
                             const std::string& what, Call&& call) {
  Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto channel = channel_.Get(timeout, wait_for_head);
    if (!channel.ok()) {
      return Status(channel.status().code(), what + ": " + channel.status().message());
    }
    auto stub = rpc::ControlService::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    grpc::Status s = call(*stub, ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return rpc::FromGrpc(s, what);
    channel_.Reset();  // the connection broke (the head restarted, or the link dropped)
    last = rpc::FromGrpc(s, what);
  }
  return last;
}

Status RemoteControl::Register(const rpc::RegisterNodeRequest& req, rpc::RegisterNodeReply* reply) {
  // Joining waits for a head that is still starting (within three timeouts).
  return Invoke(timeout_ * 3, true, "joining the cluster at " + channel_.target(),
                [&](auto& stub, auto& ctx) { return stub.RegisterNode(&ctx, req, reply); });
}

Status RemoteControl::Heartbeat(const rpc::HeartbeatRequest& req, rpc::HeartbeatReply* reply) {
  return Invoke(timeout_, false, "reporting to the head at " + channel_.target(),
                [&](auto& stub, auto& ctx) { return stub.Heartbeat(&ctx, req, reply); });
}

Status RemoteControl::Unregister(const rpc::UnregisterNodeRequest& req) {
  // A node stopping does not wait long for a head that is gone.
  rpc::UnregisterNodeReply reply;
  return Invoke(std::min(timeout_, std::chrono::milliseconds(1000)), false,
                "leaving the cluster at " + channel_.target(),
                [&](auto& stub, auto& ctx) { return stub.UnregisterNode(&ctx, req, &reply); });
}

Status RemoteControl::ListNodes(rpc::ListNodesReply* reply) {
  return Invoke(
      timeout_, false, "asking the head at " + channel_.target() + " for its nodes",
      [&](auto& stub, auto& ctx) { return stub.ListNodes(&ctx, rpc::ListNodesRequest(), reply); });
}

Status RemoteControl::RegisterJob(const rpc::JobInfo& job) {
  rpc::JobReply reply;
  return Invoke(timeout_, false, "registering a job with the head at " + channel_.target(),
                [&](auto& stub, auto& ctx) { return stub.RegisterJob(&ctx, job, &reply); });
}

Status RemoteControl::FinishJob(const JobId& id) {
  rpc::JobRequest req;
  req.set_job_id(id.Binary());
  rpc::JobReply reply;
  return Invoke(timeout_, false, "finishing a job at the head at " + channel_.target(),
                [&](auto& stub, auto& ctx) { return stub.FinishJob(&ctx, req, &reply); });
}

Result<rpc::JobInfo> RemoteControl::GetJob(const JobId& id) {
  rpc::JobRequest req;
  req.set_job_id(id.Binary());
  rpc::JobInfo job;
  PRISM_RETURN_IF_ERROR(
      Invoke(timeout_, false, "asking the head at " + channel_.target() + " for a job",
             [&](auto& stub, auto& ctx) { return stub.GetJob(&ctx, req, &job); }));
  return job;
}

Status RemoteControl::ListJobs(rpc::ListJobsReply* reply) {
  return Invoke(
      timeout_, false, "asking the head at " + channel_.target() + " for its jobs",
      [&](auto& stub, auto& ctx) { return stub.ListJobs(&ctx, rpc::ListJobsRequest(), reply); });
}

Result<rpc::KvReply> RemoteControl::Apply(const rpc::KvRequest& req) {
  rpc::KvReply reply;
  PRISM_RETURN_IF_ERROR(Invoke(timeout_, false,
                               "the key-value table at the head at " + channel_.target(),
                               [&](auto& stub, auto& ctx) { return stub.Kv(&ctx, req, &reply); }));
  return reply;
}

}  // namespace prism

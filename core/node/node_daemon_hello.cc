// Who a connection to the node daemon is: its Hello checked (protocol, token) and the peer made a
// driver (a new job), a worker the pool started, a tool or peer core worker, or another node's
// process asking for leases (spillback).
#include "base/logging.h"
#include "node/node_daemon.h"

namespace prism {

Status NodeDaemon::HandleHello(rpc::Connection& conn, const rpc::Hello& hello,
                               rpc::Welcome* welcome) {
  PRISM_RETURN_IF_ERROR(rpc::CheckHello(hello, config_.token));
  auto* peer = static_cast<Peer*>(conn.user_data);
  welcome->set_node_id(node_id_.Binary());
  if (cluster_) welcome->set_node_address(cluster_->node_address());
  welcome->set_session_dir(config_.session_dir);
  if (hello.want_store()) {
    peer->store_client = next_store_client_++;
    welcome->set_store_capacity(store_->capacity());
  }
  switch (hello.role()) {
    case rpc::ROLE_DRIVER: {
      if (!WorkerId::IsValidBinary(hello.worker_id()) ||
          IsAlive(WorkerId::FromBinary(hello.worker_id()))) {
        return Status::InvalidArgument(
            "a driver needs a worker id of its own (16 bytes, not in use)");
      }
      pid_t pid = conn.peer_pid();
      if (pid <= 0) return Status::PermissionDenied("cannot identify the driver process");
      PRISM_ASSIGN_OR_RETURN(Job job, WorkerPool::JobOf(pid, hello));
      job.id = control_.AddJob(pid);
      job.driver = &conn;
      peer->role = rpc::ROLE_DRIVER;
      peer->job = job.id;
      peer->worker = WorkerId::FromBinary(hello.worker_id());
      welcome->set_job_id(job.id.Binary());
      PRISM_LOG_INFO("job {} started by pid {}", JobIdToInt(job.id), pid);
      job.driver_worker = peer->worker;
      cluster_->ReportJob(JobInfoOf(job, pid));
      workers_.AddJob(std::move(job));
      return Status::OK();
    }
    case rpc::ROLE_WORKER: {
      PRISM_ASSIGN_OR_RETURN(
          WorkerId id,
          workers_.Register(hello, conn.peer_pid(),
                            std::static_pointer_cast<rpc::Connection>(conn.shared_from_this())));
      peer->role = rpc::ROLE_WORKER;
      peer->job = workers_.Find(id)->job;
      peer->worker = id;
      return Status::OK();
    }
    case rpc::ROLE_CLIENT:
      peer->role = rpc::ROLE_CLIENT;
      return Status::OK();
    case rpc::ROLE_REMOTE_CALLER:
      // (Only through the relay, whose tunnels come from nodes that showed the cluster token.)
      if (!JobId::IsValidBinary(hello.job_id()))
        return Status::InvalidArgument("a remote caller names its job (Hello.job_id)");
      if (hello.want_store())
        return Status::PermissionDenied("another node's process cannot open this node's store");
      peer->role = rpc::ROLE_REMOTE_CALLER;
      peer->job = JobId::FromBinary(hello.job_id());
      if (WorkerId::IsValidBinary(hello.worker_id()))
        peer->worker = WorkerId::FromBinary(hello.worker_id());
      return Status::OK();
    default:
      return Status::InvalidArgument("unknown role " + std::to_string(hello.role()));
  }
}

}  // namespace prism

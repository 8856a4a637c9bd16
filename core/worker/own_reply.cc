#include "worker/own_reply.h"

namespace prism {

void OwnReply::Sent(const void* submitter, const std::shared_ptr<rpc::Connection>& conn,
                    const TaskId& task, uint64_t attempt, const ObjectId& return_id) {
  submitter_ = submitter;
  conn_ = conn;
  frames_sent_ = conn->frames_queued();
  task_ = task;
  attempt_ = attempt;
  return_id_ = return_id;
  waiting_ = true;
}

void OwnReply::Release() {
  if (claimed_) {
    claimed_->ReleaseReads();
    claimed_.reset();
  }
}

void OwnReply::Read(const void* submitter, bool last, const rpc::Connection::TakeHere& take) {
  if (submitter != submitter_) return;
  if (last || !waiting_) {
    Release();
    return;
  }
  if (!claimed_) {
    std::shared_ptr<rpc::Connection> conn = conn_.lock();
    if (!conn || conn->closed() || conn->frames_queued() != frames_sent_) {
      waiting_ = false;  // the loop answers it
      return;
    }
    conn->ClaimReads();
    claimed_ = std::move(conn);
  }
  claimed_->TryReadHere(take);
  if (!waiting_) Release();
}

bool OwnReply::TakePlain(rpc::Envelope& msg, std::string* value) {
  if (!waiting_) return false;
  waiting_ = false;
  if (!msg.has_task_reply()) return false;
  rpc::TaskReply& reply = *msg.mutable_task_reply();
  if (reply.attempt() != attempt_ || !TaskId::IsValidBinary(reply.task_id()) ||
      TaskId::FromBinary(reply.task_id()) != task_) {
    return false;  // another call's (the loop pipelined it here)
  }
  // An error may be retried, and refs or device objects in a result are the loop's to account for.
  if (reply.error().kind() != rpc::ERROR_NONE || reply.returns_size() != 1) return false;
  rpc::ReturnObject& ret = *reply.mutable_returns(0);
  if (ret.in_store() || ret.has_device_producer() || ret.nested_size() != 0) return false;
  *value = std::move(*ret.mutable_data());
  return true;
}

}  // namespace prism

#include "control/kv_table.h"

namespace prism {

Result<rpc::KvReply> KvTable::Apply(const rpc::KvRequest& req) {
  auto key = std::make_pair(req.ns(), req.key());
  MutexLock lock(mu_);
  rpc::KvReply reply;
  reply.set_request_id(req.request_id());
  auto it = table_.find(key);
  reply.set_found(it != table_.end());
  switch (req.op()) {
    case rpc::KvRequest::GET:
      if (it != table_.end()) reply.set_value(it->second);
      break;
    case rpc::KvRequest::PUT:
      if (it == table_.end() || req.overwrite()) table_[std::move(key)] = req.value();
      break;
    case rpc::KvRequest::DELETE:
      if (it != table_.end()) table_.erase(it);
      break;
    default:
      return Status::InvalidArgument("unknown key-value operation");
  }
  return reply;
}

}  // namespace prism

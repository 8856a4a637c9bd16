#include "worker/pending_task.h"

#include <algorithm>

#include "rpc/address.h"

namespace prism {

ArenaSpec::ArenaSpec()
    : arena_(std::make_unique<rpc::MessageArena>()),
      spec_(google::protobuf::Arena::CreateMessage<rpc::TaskSpec>(arena_->get())) {}
ArenaSpec::~ArenaSpec() = default;
ArenaSpec::ArenaSpec(const ArenaSpec& other) : ArenaSpec() { spec_->CopyFrom(*other.spec_); }
ArenaSpec& ArenaSpec::operator=(const ArenaSpec& other) {
  if (this != &other) {
    if (!arena_) *this = ArenaSpec();
    spec_->CopyFrom(*other.spec_);
  }
  return *this;
}
ArenaSpec::ArenaSpec(ArenaSpec&& other) noexcept
    : arena_(std::move(other.arena_)), spec_(other.spec_) {
  other.spec_ = nullptr;
}
ArenaSpec& ArenaSpec::operator=(ArenaSpec&& other) noexcept {
  if (this != &other) {
    arena_ = std::move(other.arena_);
    spec_ = other.spec_;
    other.spec_ = nullptr;
  }
  return *this;
}

std::vector<StoredObject> ResultsFromReply(rpc::TaskReply& reply, SubmitterHost& host,
                                           uint32_t num_returns) {
  std::vector<StoredObject> out;
  if (reply.error().kind() != rpc::ERROR_NONE) {
    StoredObject err;
    err.error = reply.error();
    if (err.error.type_name().empty() && err.error.kind() == rpc::ERROR_TASK)
      err.error.set_type_name("unknown");
    out.push_back(std::move(err));
    return out;
  }
  const uint32_t expected = std::max<uint32_t>(1, num_returns);
  if (static_cast<uint32_t>(reply.returns_size()) != expected) {
    DiscardReply(reply, host, num_returns);
    out.push_back(StoredObject::Error(rpc::ERROR_SYSTEM,
                                      "the worker sent " + std::to_string(reply.returns_size()) +
                                          " return values, expected " + std::to_string(expected)));
    return out;
  }
  out.reserve(expected);
  for (auto& ret : *reply.mutable_returns()) out.push_back(ResultFromReturn(ret, host));
  return out;
}

void DiscardReply(const rpc::TaskReply& reply, SubmitterHost& host, uint32_t num_returns) {
  // Only the task's own return ids: a reply cannot make the caller free another object.
  if (!TaskId::IsValidBinary(reply.task_id())) return;
  TaskId task = TaskId::FromBinary(reply.task_id());
  const int n =
      std::min<int>(reply.returns_size(), static_cast<int>(std::max<uint32_t>(1, num_returns)));
  for (int i = 0; i < n; ++i) {
    if (reply.returns(i).in_store())
      host.DiscardStored(ReturnObjectId(task, static_cast<uint32_t>(i + 1)));
  }
}

StoredObject ResultFromReturn(rpc::ReturnObject& ret, SubmitterHost& host) {
  StoredObject obj = ret.in_store() ? StoredObject::InStore(ret.size())
                                    : StoredObject::Value(std::move(*ret.mutable_data()));
  if (ret.has_device_producer()) {
    obj.device_producer = rpc::FromWire(ret.device_producer());
  }
  // Taken before the task's argument refs go: a ref passed in and returned stays alive.
  obj.contained.reserve(static_cast<size_t>(ret.nested_size()));
  for (const auto& n : ret.nested()) obj.contained.push_back(host.NestedRef(n));
  return obj;
}

bool StoreResult(MemoryStore& store, SubmitterHost& host, const ObjectId& return_id,
                 StoredObject result) {
  bool in_store = result.in_store;
  internal::OwnerAddress producer = result.device_producer;
  if (store.Put(return_id, std::move(result))) return true;
  if (in_store) host.DiscardStored(return_id);
  // Nobody wants it: its producer may free the device objects it keeps for it.
  if (!producer.socket_path.empty()) host.DiscardDevice(return_id, producer);
  return false;
}

void StoreMoreResults(MemoryStore& store, SubmitterHost& host, const rpc::TaskSpec& spec,
                      const StoredObject& first, std::vector<StoredObject> more) {
  if (spec.num_returns() <= 1) return;
  TaskId task = TaskId::FromBinary(spec.task_id());
  for (uint32_t i = 2; i <= spec.num_returns(); ++i) {
    StoredObject r;
    if (first.is_error()) {
      r.error = first.error;  // a failed task fails every return object alike
    } else if (i - 2 < more.size()) {
      r = std::move(more[i - 2]);
    } else {
      r = StoredObject::Error(rpc::ERROR_SYSTEM, "return value " + std::to_string(i) + " of task " +
                                                     spec.name() + " never came");
    }
    StoreResult(store, host, ReturnObjectId(task, i), std::move(r));
  }
}

bool FitsTheFastLane(const PendingTask& task, size_t max_frame_bytes) {
  return task.spec->ByteSizeLong() + 1024 <= max_frame_bytes &&
         std::none_of(task.arg_refs.begin(), task.arg_refs.end(),
                      [](const internal::RefPtr& r) { return r != nullptr; });
}

size_t ResolveArgRefs(const std::vector<internal::RefPtr>& arg_refs, MemoryStore& store,
                      SubmitterHost& host,
                      const std::function<void(size_t index, const StoredObject&)>& on_ready) {
  size_t n = 0;
  for (size_t i = 0; i < arg_refs.size(); ++i) {
    const internal::RefPtr& ref = arg_refs[i];
    if (!ref) continue;
    ++n;
    auto ready = [on_ready, i](const StoredObject& obj) { on_ready(i, obj); };
    if (host.IsSelf(ref->owner())) {
      if (!store.OnReady(ref->id(), ready)) {
        ready(StoredObject::Error(rpc::ERROR_OBJECT_LOST, "argument object " + ref->id().Hex() +
                                                              " is not known to its owner"));
      }
    } else {
      host.FetchBorrowed(ref->id(), ref->owner(), ready);
    }
  }
  return n;
}

void SetResolvedArg(rpc::TaskSpec& spec, size_t index, const ObjectId& id,
                    const StoredObject& obj) {
  auto* arg = spec.mutable_args(static_cast<int>(index));
  if (obj.in_store) {
    // The worker reads it from the node's store; the caller's ref keeps it there meanwhile.
    arg->set_store_object(id.Binary());
  } else {
    arg->set_value(*obj.data);
  }
}

}  // namespace prism

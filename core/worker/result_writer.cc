#include "worker/result_writer.h"

#include <prism/errors.h>

#include <algorithm>
#include <string>

#include "rpc/address.h"

namespace prism {

void ResultWriter::Store(const ObjectId& id, const internal::EncodedValue& out,
                         const WorkerId& caller, rpc::ReturnObject* ret) {
  if (out.size > internal::kMaxInlineBytes) {
    ret->set_object_id(id.Binary());  // (for DropStored; the caller knows its return ids)
    try {
      objects_.WriteToStore(id, out, caller);
    } catch (const ObjectStoreFullError&) {
      throw;
    } catch (const std::exception& e) {
      // The runtime failed, not the function: say so.
      throw StoreWriteError(e.what());
    }
    ret->set_in_store(true);
    ret->set_size(out.size);
  } else {
    ret->set_data(out.ToString());
  }
  LendNested(out.nested, caller, ret);
}

void ResultWriter::StoreAll(const rpc::TaskSpec& spec, const ReturnValues& out,
                            rpc::TaskReply& reply) {
  const size_t expected = std::max<uint32_t>(1, spec.num_returns());
  if (out.size() != expected) {
    throw StoreWriteError("task " + spec.name() + " returned " + std::to_string(out.size()) +
                          " values, but num_returns is " + std::to_string(expected));
  }
  TaskId task = TaskId::FromBinary(spec.task_id());
  WorkerId caller = WorkerId::FromBinary(spec.caller().worker_id());
  try {
    for (size_t i = 0; i < out.size(); ++i) {
      Store(ReturnObjectId(task, static_cast<uint32_t>(i + 1)), out[i], caller,
            reply.add_returns());
    }
  } catch (...) {
    DropStored(reply);  // the caller will hear of the failure only: nobody would free them
    throw;
  }
}

void ResultWriter::DropStored(const rpc::TaskReply& reply) {
  std::vector<ObjectId> stored;
  for (const auto& ret : reply.returns()) {
    if (ret.in_store() && ObjectId::IsValidBinary(ret.object_id()))
      stored.push_back(ObjectId::FromBinary(ret.object_id()));
  }
  if (!stored.empty()) host_store_.Delete(stored);
}

void ResultWriter::LendNested(const std::vector<internal::RefPtr>& nested, const WorkerId& caller,
                              rpc::ReturnObject* ret) {
  for (const auto& h : nested) {
    auto* n = ret->add_nested();
    n->set_object_id(h->id().Binary());
    rpc::ToWire(h->owner(), n->mutable_owner());
    if (h->owner().worker_id == caller.Binary()) continue;  // the caller owns it
    if (objects_.IsSelf(h->owner())) {
      n->set_borrow_registered(store_.AddBorrower(h->id(), caller));
    } else {
      owners_.QueueAddBorrower(h->owner(), h->id(), caller);
      n->set_borrow_registered(true);
    }
  }
}

}  // namespace prism

#include "worker/owner_service.h"

#include <memory>
#include <string>

namespace prism {

bool OwnerService::Handle(rpc::Connection& conn, const rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kGetObject:
      GetObject(conn, msg.get_object());
      return true;
    case rpc::Envelope::kAddBorrowers:
      AddBorrowers(conn, msg.add_borrowers());
      return true;
    case rpc::Envelope::kRemoveBorrowers:
      RemoveBorrowers(msg.remove_borrowers());
      return true;
    case rpc::Envelope::kImportDeviceObject:
      ImportDeviceObject(conn, msg.import_device_object());
      return true;
    case rpc::Envelope::kReleaseDeviceObjects:
      ReleaseDeviceObjects(msg.release_device_objects());
      return true;
    default:
      return false;
  }
}

void OwnerService::GetObject(rpc::Connection& conn, const rpc::GetObjectRequest& req) {
  auto self = conn.shared_from_this();
  uint64_t rid = req.request_id();
  std::string oid = req.object_id();
  auto reply = [self, rid, oid](const StoredObject& obj) {
    rpc::Envelope env;
    auto* r = env.mutable_get_object_reply();
    r->set_request_id(rid);
    r->set_object_id(oid);
    if (obj.is_error()) {
      *r->mutable_error() = obj.error;
    } else if (obj.in_store) {
      r->set_in_store(true);
      r->set_size(obj.size);
    } else {
      r->set_data(*obj.data);
    }
    self->Send(env);
  };
  if (!ObjectId::IsValidBinary(oid)) {
    reply(StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                              "a malformed object id (" + std::to_string(oid.size()) +
                                  " bytes, not " + std::to_string(ObjectId::kSize) + ")"));
    return;
  }
  if (!store_.OnReady(ObjectId::FromBinary(oid), reply)) {
    reply(StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                              "object " + ObjectId::FromBinary(oid).Hex() +
                                  " is not held by its owner (freed, or never existed)"));
  }
}

void OwnerService::AddBorrowers(rpc::Connection& conn, const rpc::AddBorrowers& req) {
  rpc::Envelope env;
  auto* r = env.mutable_borrowers_added();
  r->set_request_id(req.request_id());
  // A malformed request counts nothing, but is still answered, so the sender's wait ends. So is
  // one for a borrower already reported dead (its frame was on its way when it died).
  const bool valid = WorkerId::IsValidBinary(req.borrower()) && !Dead(req.borrower());
  WorkerId borrower = valid ? WorkerId::FromBinary(req.borrower()) : WorkerId();
  for (const auto& bin : req.object_ids()) {
    if (!valid || !ObjectId::IsValidBinary(bin) ||
        !store_.AddBorrower(ObjectId::FromBinary(bin), borrower)) {
      r->add_lost(bin);
    }
  }
  conn.Send(env);
}

void OwnerService::RemoveBorrowers(const rpc::RemoveBorrowers& req) {
  if (!WorkerId::IsValidBinary(req.borrower())) return;
  WorkerId borrower = WorkerId::FromBinary(req.borrower());
  for (int i = 0; i < req.object_ids_size(); ++i) {
    if (!ObjectId::IsValidBinary(req.object_ids(i))) continue;
    uint32_t n = i < req.counts_size() ? req.counts(i) : 1;
    store_.RemoveBorrower(ObjectId::FromBinary(req.object_ids(i)), borrower, n);
  }
}

void OwnerService::ImportDeviceObject(rpc::Connection& conn, const rpc::ImportDeviceObject& req) {
  // (An importer the daemon reported dead is not counted: its release would never come.)
  // (A spilled object is restored first, here on the event loop: a copy from host memory.)
  std::string handle;
  const bool held = WorkerId::IsValidBinary(req.importer()) && !Dead(req.importer()) &&
                    gpu_.AddImport(req.id(), WorkerId::FromBinary(req.importer()), &handle);
  rpc::Envelope reply;
  reply.mutable_device_object_imported()->set_request_id(req.request_id());
  reply.mutable_device_object_imported()->set_lost(!held);
  reply.mutable_device_object_imported()->set_memory_handle(handle);
  conn.Send(reply);
  // (Queued in the order requests come, so the pair's sends match the importer's receives.)
  if (held && !req.transfer_group().empty()) {
    gpu_.QueueSend(req.id(), WorkerId::FromBinary(req.importer()), req.transfer_group());
  }
}

void OwnerService::ReleaseDeviceObjects(const rpc::ReleaseDeviceObjects& req) {
  for (const auto& oid : req.object_ids()) {
    if (ObjectId::IsValidBinary(oid)) gpu_.ReleaseObject(ObjectId::FromBinary(oid));
  }
  if (WorkerId::IsValidBinary(req.importer())) {
    for (const auto& id : req.ids()) gpu_.RemoveImport(id, WorkerId::FromBinary(req.importer()));
  }
}

void OwnerService::WorkerDied(const WorkerId& worker) {
  dead_.insert(worker);
  store_.RemoveBorrowerEverywhere(worker);
  gpu_.ImporterDied(worker);
}

bool OwnerService::Dead(const std::string& worker) const {
  return dead_.count(WorkerId::FromBinary(worker)) > 0;
}

}  // namespace prism

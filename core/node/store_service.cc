#include "node/store_service.h"

namespace prism {

StoreService::StoreService(ObjectStore& store, std::function<bool(const WorkerId&)> is_alive)
    : store_(store), is_alive_(std::move(is_alive)) {}

void StoreService::Handle(rpc::Connection& conn, ObjectStore::ClientId client, rpc::Envelope& msg) {
  auto object_id = [](const std::string& bin, ObjectId* out) -> Status {
    if (!ObjectId::IsValidBinary(bin)) {
      return Status::InvalidArgument("an object id is " + std::to_string(ObjectId::kSize) +
                                     " bytes, not " + std::to_string(bin.size()));
    }
    *out = ObjectId::FromBinary(bin);
    return Status::OK();
  };
  rpc::Envelope reply;
  auto* r = reply.mutable_store_reply();
  ObjectId id;
  switch (msg.body_case()) {
    case rpc::Envelope::kStoreCreate: {
      const auto& req = msg.store_create();
      r->set_request_id(req.request_id());
      Status st = object_id(req.object_id(), &id);
      if (st.ok() && !WorkerId::IsValidBinary(req.owner_worker_id())) {
        st = Status::InvalidArgument("StoreCreate needs the owner's worker id");
      }
      WorkerId owner = WorkerId::FromBinary(req.owner_worker_id());
      if (st.ok() && !is_alive_(owner)) {
        // Nobody could ever free it: refuse rather than leak until the daemon stops.
        st = Status::NotFound("the owner " + owner.Hex() + " of object " + id.Hex() +
                              " is not a live driver or worker of this node");
      }
      if (!st.ok()) return rpc::SendErrorFrame(conn, req.request_id(), st);
      // Answered when it has room: at once, or after spills (the loop serves others meanwhile).
      auto self = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
      store_.CreateAsync(
          client, id, req.size(), owner,
          [self, rid = req.request_id(), bin = req.object_id()](Result<ObjectStore::Located> loc) {
            if (!loc.ok()) return rpc::SendErrorFrame(*self, rid, loc.status());
            rpc::Envelope answer;
            auto* sr = answer.mutable_store_reply();
            sr->set_request_id(rid);
            auto* o = sr->add_objects();
            o->set_object_id(bin);
            o->set_offset(loc->offset);
            o->set_size(loc->size);
            self->Send(answer);
          });
      return;
    }
    case rpc::Envelope::kStoreSeal:
    case rpc::Envelope::kStoreAbort: {
      bool seal = msg.has_store_seal();
      uint64_t rid = seal ? msg.store_seal().request_id() : msg.store_abort().request_id();
      const std::string& bin = seal ? msg.store_seal().object_id() : msg.store_abort().object_id();
      r->set_request_id(rid);
      Status st = object_id(bin, &id);
      if (st.ok()) st = seal ? store_.Seal(client, id) : store_.Abort(client, id);
      if (!st.ok()) return rpc::SendErrorFrame(conn, rid, st);
      break;
    }
    case rpc::Envelope::kStoreGet: {
      const auto& req = msg.store_get();
      r->set_request_id(req.request_id());
      // One answer for all the ids, sent when the last is located (a spilled one once restored).
      struct Pending {
        rpc::Envelope reply;
        int remaining = 0;
      };
      auto pending = std::make_shared<Pending>();
      pending->reply = std::move(reply);
      pending->remaining = req.object_ids_size() + 1;  // + 1: until every id was asked for
      auto self = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
      auto one_done = [pending, self] {
        if (--pending->remaining == 0) self->Send(pending->reply);
      };
      for (const auto& bin : req.object_ids()) {
        auto* o = pending->reply.mutable_store_reply()->add_objects();
        o->set_object_id(bin);
        const int index = pending->reply.store_reply().objects_size() - 1;
        Status st = object_id(bin, &id);
        if (!st.ok()) {
          o->set_code(static_cast<uint32_t>(st.code()));
          o->set_message(st.message());
          one_done();
          continue;
        }
        store_.GetAsync(client, id, [pending, index, one_done](Result<ObjectStore::Located> loc) {
          auto* out = pending->reply.mutable_store_reply()->mutable_objects(index);
          if (loc.ok()) {
            out->set_offset(loc->offset);
            out->set_size(loc->size);
          } else {
            out->set_code(static_cast<uint32_t>(loc.status().code()));
            out->set_message(loc.status().message());
          }
          one_done();
        });
      }
      one_done();
      return;
    }
    case rpc::Envelope::kStoreRelease:
    case rpc::Envelope::kStoreDelete: {
      bool release = msg.has_store_release();
      const auto& ids =
          release ? msg.store_release().object_ids() : msg.store_delete().object_ids();
      uint64_t rid = release ? msg.store_release().request_id() : msg.store_delete().request_id();
      Status first;
      std::string errors;
      for (const auto& bin : ids) {
        Status st = object_id(bin, &id);
        if (st.ok()) {
          if (release) {
            st = store_.Release(client, id);
          } else {
            store_.Delete(id);
          }
        }
        if (!st.ok()) {
          if (first.ok()) first = st;
          errors += (errors.empty() ? "" : "; ") + st.message();
        }
      }
      if (!errors.empty()) rpc::SendErrorFrame(conn, rid, Status(first.code(), errors));
      return;  // answered only on error
    }
    default:
      return;
  }
  conn.Send(reply);
}

void StoreService::Report(rpc::StoreStats* out, const std::string& spill_dir) const {
  StoreTableStats st = store_.stats();
  out->set_capacity(st.capacity);
  out->set_used(st.used);
  out->set_pinned(st.pinned);
  out->set_spilled(st.spilled);
  out->set_num_objects(st.num_objects);
  out->set_num_spilled(st.num_spilled);
  out->set_spills_total(st.spills_total);
  out->set_restores_total(st.restores_total);
  out->set_spill_dir(spill_dir);
}

}  // namespace prism

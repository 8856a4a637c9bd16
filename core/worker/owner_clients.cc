#include "worker/owner_clients.h"

#include <utility>

#include "base/logging.h"
#include "base/mutex.h"
#include "rpc/address.h"

namespace prism {

struct OwnerClients::Owner {
  std::shared_ptr<rpc::Connection> conn;  // null while connecting
  std::vector<rpc::Envelope> queued;      // sent once connected
  bool lost = false;
  void Send(const rpc::Envelope& e) {
    if (conn) {
      conn->Send(e);
    } else if (!lost) {
      queued.push_back(e);
    }
  }
  // Fetches not answered yet.
  std::unordered_map<uint64_t, std::pair<ObjectId, MemoryStore::Callback>> waiting;
  // AddBorrowers requests not answered yet: how many registrations each carried, and for whom.
  struct Adds {
    std::vector<ObjectId> ids;
    WorkerId borrower;
  };
  std::unordered_map<uint64_t, Adds> adds;
  // ImportDeviceObject requests not answered yet.
  std::unordered_map<uint64_t, std::shared_ptr<std::promise<std::optional<std::string>>>> imports;
};

OwnerClients::OwnerClients(asio::io_context& io, Config config,
                           std::function<void(const ObjectId&)> undo_registration)
    : io_(io), config_(std::move(config)), undo_registration_(std::move(undo_registration)) {}

OwnerClients::~OwnerClients() = default;

OwnerClients::Owner* OwnerClients::Connection(const internal::OwnerAddress& owner) {
  // By node and socket: two machines may have sockets of one name.
  const std::string key = owner.node_address + "|" + owner.socket_path;
  auto it = owners_.find(key);
  if (it != owners_.end() && !it->second->lost &&
      (!it->second->conn || !it->second->conn->closed())) {
    return it->second.get();
  }
  auto& slot = owners_[key];
  if (slot) {
    // A lost connection to the same path: keep it until its handlers are done.
    std::shared_ptr<Owner> old(slot.release());
    asio::post(io_, [old] {});
  }
  slot = std::make_unique<Owner>();
  Owner* raw = slot.get();
  rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_CLIENT, config_.token);
  hello.mutable_hello()->set_expect_worker_id(owner.worker_id);
  rpc::Address target;
  rpc::ToWire(owner, &target);
  rpc::AsyncConnectAndHello(
      io_, target, hello, std::chrono::seconds(10),
      [this, raw, key](Result<rpc::Connected> connected) {
        auto cur = owners_.find(key);
        if (cur == owners_.end() || cur->second.get() != raw) return;  // replaced meanwhile
        if (!connected.ok()) {
          Lost(raw, connected.status());
          return;
        }
        raw->conn = rpc::Connection::Create(std::move(connected->socket), config_.max_frame_bytes);
        raw->conn->Start([this, raw](rpc::Connection&, rpc::Envelope& m) { OnMessage(raw, m); },
                         [this, raw](rpc::Connection&, const Status& st) { Lost(raw, st); },
                         std::move(connected->leftover));
        auto queued = std::move(raw->queued);
        raw->queued.clear();
        for (const auto& e : queued) raw->conn->Send(e);
      });
  return raw;
}

void OwnerClients::OnMessage(Owner* o, rpc::Envelope& m) {
  if (m.has_borrowers_added()) {
    auto a = o->adds.find(m.borrowers_added().request_id());
    if (a == o->adds.end()) return;
    int n = static_cast<int>(a->second.ids.size());
    if (a->second.borrower == config_.self) {
      for (const auto& lost : m.borrowers_added().lost()) {
        if (ObjectId::IsValidBinary(lost)) undo_registration_(ObjectId::FromBinary(lost));
      }
    }
    o->adds.erase(a);
    RegistrationsAnswered(n);
    return;
  }
  if (m.has_device_object_imported()) {
    auto i = o->imports.find(m.device_object_imported().request_id());
    if (i == o->imports.end()) return;
    const auto& answer = m.device_object_imported();
    i->second->set_value(answer.lost() ? std::nullopt
                                       : std::optional<std::string>(answer.memory_handle()));
    o->imports.erase(i);
    return;
  }
  if (!m.has_get_object_reply()) return;
  auto w = o->waiting.find(m.get_object_reply().request_id());
  if (w == o->waiting.end()) return;
  auto cb = std::move(w->second.second);
  o->waiting.erase(w);
  const auto& r = m.get_object_reply();
  if (r.error().kind() != rpc::ERROR_NONE) {
    StoredObject obj;
    obj.error = r.error();
    cb(obj);
  } else if (r.in_store()) {
    cb(StoredObject::InStore(r.size()));
  } else {
    cb(StoredObject::Value(r.data()));
  }
}

void OwnerClients::Lost(Owner* o, const Status& why) {
  o->lost = true;
  o->queued.clear();
  for (auto& [rid, p] : o->imports)
    p->set_value(std::nullopt);  // the producer (and its objects) are gone
  o->imports.clear();
  auto waiting = std::move(o->waiting);
  o->waiting.clear();
  for (auto& [rid, w] : waiting) {
    w.second(StoredObject::Error(
        rpc::ERROR_OWNER_DIED,
        "the owner of object " + w.first.Hex() + " died or is unreachable: " + why.message()));
  }
  // Registrations the owner will never answer: it is gone, and so are its objects.
  int n = 0;
  for (auto& [rid, a] : o->adds) n += static_cast<int>(a.ids.size());
  o->adds.clear();
  if (n > 0) RegistrationsAnswered(n);
}

void OwnerClients::Fetch(const ObjectId& id, const internal::OwnerAddress& owner,
                         MemoryStore::Callback done) {
  Owner* o = Connection(owner);
  uint64_t rid = next_request_id_++;
  o->waiting[rid] = {id, std::move(done)};
  rpc::Envelope env;
  env.mutable_get_object()->set_request_id(rid);
  env.mutable_get_object()->set_object_id(id.Binary());
  o->Send(env);
}

void OwnerClients::Post(const internal::OwnerAddress& to, rpc::Envelope env) {
  asio::post(io_, [this, to, env = std::move(env)] { Connection(to)->Send(env); });
}

void OwnerClients::QueueAddBorrower(const internal::OwnerAddress& owner, const ObjectId& id,
                                    const WorkerId& borrower) {
  {
    MutexLock lock(borrow_mu_);
    pending_adds_++;
    Batch& b = out_[owner.socket_path];
    b.owner = owner;
    b.adds[borrower].push_back(id);
  }
  PostFlush();
}

void OwnerClients::QueueRelease(const internal::OwnerAddress& owner, const ObjectId& id,
                                uint32_t count) {
  {
    MutexLock lock(borrow_mu_);
    Batch& b = out_[owner.socket_path];
    b.owner = owner;
    b.removes.emplace_back(id, count);
  }
  PostFlush();
}

void OwnerClients::PostFlush() {
  {
    MutexLock lock(borrow_mu_);
    if (flush_posted_) return;
    flush_posted_ = true;
  }
  asio::post(io_, [this] { Flush(); });
}

void OwnerClients::Flush() {
  std::map<std::string, Batch> out;
  {
    MutexLock lock(borrow_mu_);
    flush_posted_ = false;
    for (auto& [path, b] : out_) {
      Batch& o = out[path];
      o.owner = b.owner;
      o.adds = std::move(b.adds);
      b.adds.clear();
      // Releases wait until every registration queued before them is answered (the ones
      // going out now included).
      if (pending_adds_ == 0) {
        o.removes = std::move(b.removes);
        b.removes.clear();
      }
    }
    for (auto it = out_.begin(); it != out_.end();) {
      it = it->second.removes.empty() && it->second.adds.empty() ? out_.erase(it) : std::next(it);
    }
  }
  for (auto& [path, b] : out) {
    if (b.adds.empty() && b.removes.empty()) continue;
    Owner* o = Connection(b.owner);
    for (auto& [borrower, ids] : b.adds) {
      uint64_t rid = next_request_id_++;
      rpc::Envelope env;
      auto* a = env.mutable_add_borrowers();
      a->set_request_id(rid);
      a->set_borrower(borrower.Binary());
      for (const auto& id : ids) a->add_object_ids(id.Binary());
      o->adds[rid] = Owner::Adds{ids, borrower};
      o->Send(env);
    }
    if (!b.removes.empty()) {
      rpc::Envelope env;
      auto* r = env.mutable_remove_borrowers();
      r->set_borrower(config_.self.Binary());
      for (auto& [id, n] : b.removes) {
        r->add_object_ids(id.Binary());
        r->add_counts(n);
      }
      // To an owner that pushed tasks here: on that connection, behind the task replies that
      // may carry these objects back to it.
      std::shared_ptr<rpc::Connection> lease;
      {
        MutexLock lock(callers_mu_);
        auto c = callers_.find(b.owner.worker_id);
        if (c != callers_.end()) lease = c->second.lock();
      }
      if (lease && !lease->closed()) {
        lease->Send(env);
      } else {
        o->Send(env);
      }
    }
  }
}

void OwnerClients::RegistrationsAnswered(int n) {
  bool flush = false;
  {
    MutexLock lock(borrow_mu_);
    pending_adds_ -= n;
    if (pending_adds_ <= 0) {
      pending_adds_ = 0;
      for (auto& [path, b] : out_) flush = flush || !b.removes.empty();
    }
  }
  borrow_cv_.notify_all();
  if (flush) PostFlush();
}

void OwnerClients::WaitForRegistrations() {
  UniqueLock lock(borrow_mu_);
  if (!borrow_cv_.wait_for(lock, config_.registration_wait,
                           [this]() PRISM_REQUIRES(borrow_mu_) { return pending_adds_ == 0; })) {
    PRISM_LOG_WARN("{} borrow registrations unanswered after {} ms; replying anyway", pending_adds_,
                   config_.registration_wait.count());
  }
}

int OwnerClients::pending_registrations() const {
  MutexLock lock(borrow_mu_);
  return pending_adds_;
}

void OwnerClients::RecordCaller(const std::string& worker_id,
                                const std::shared_ptr<rpc::Connection>& conn) {
  MutexLock lock(callers_mu_);
  // Mostly the same caller on the same connection as the last task: no new key, no store.
  auto it = callers_.find(worker_id);
  if (it == callers_.end()) {
    callers_.emplace(worker_id, conn);
  } else if (it->second.owner_before(conn) || conn.owner_before(it->second)) {
    it->second = conn;
  }
}

std::optional<std::string> OwnerClients::ImportDeviceObject(const internal::OwnerAddress& producer,
                                                            const std::string& id,
                                                            const std::string& transfer_group) {
  auto answered = std::make_shared<std::promise<std::optional<std::string>>>();
  std::future<std::optional<std::string>> result = answered->get_future();
  asio::post(io_, [this, producer, id, transfer_group, answered] {
    Owner* o = Connection(producer);
    if (o->lost) {
      answered->set_value(std::nullopt);
      return;
    }
    uint64_t rid = next_request_id_++;
    o->imports[rid] = answered;
    rpc::Envelope env;
    auto* m = env.mutable_import_device_object();
    m->set_request_id(rid);
    m->set_id(id);
    m->set_importer(config_.self.Binary());
    m->set_transfer_group(transfer_group);
    o->Send(env);
  });
  if (result.wait_for(config_.import_wait) != std::future_status::ready) {
    // Given up on: should the producer count it after all, this undoes that (same connection,
    // so it arrives after the request).
    ReleaseDeviceImport(producer, id);
    return std::nullopt;
  }
  return result.get();
}

void OwnerClients::ReleaseDeviceImport(const internal::OwnerAddress& producer,
                                       const std::string& id) {
  rpc::Envelope env;
  env.mutable_release_device_objects()->add_ids(id);
  env.mutable_release_device_objects()->set_importer(config_.self.Binary());
  Post(producer, std::move(env));
}

void OwnerClients::ReleaseDeviceResult(const ObjectId& id, const internal::OwnerAddress& producer) {
  rpc::Envelope env;
  env.mutable_release_device_objects()->add_object_ids(id.Binary());
  Post(producer, std::move(env));
}

void OwnerClients::CloseAll() {
  for (auto& [path, o] : owners_) {
    if (o->conn) o->conn->Close(Status::Cancelled("shutting down"));
  }
}

}  // namespace prism

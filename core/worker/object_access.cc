#include "worker/object_access.h"

#include <prism/errors.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>

#include "base/mutex.h"

namespace prism {

ObjectAccess::ObjectAccess(Self self, MemoryStore& store, std::shared_ptr<StoreClient> host_store,
                           OwnerClients& owners, TaskContext& context, asio::io_context& io,
                           std::function<bool()> in_worker_task, std::function<void(bool)> blocked)
    : self_(std::move(self)),
      worker_id_(WorkerId::FromBinary(self_.address.worker_id)),
      self_address_(std::make_shared<const internal::OwnerAddress>(self_.address)),
      store_(store),
      host_store_(std::move(host_store)),
      owners_(owners),
      context_(context),
      io_(io),
      in_worker_task_(std::move(in_worker_task)),
      blocked_(std::move(blocked)) {}

[[noreturn]] void ThrowStored(const ObjectId& id, const rpc::TaskError& e) {
  switch (e.kind()) {
    case rpc::ERROR_TASK:
      throw TaskError(e.function(), e.type_name(), e.message(), e.payload());
    case rpc::ERROR_WORKER_CRASHED:
      throw WorkerCrashedError(e.message());
    case rpc::ERROR_INFEASIBLE:
      throw InfeasibleError(e.message());
    case rpc::ERROR_FUNCTION_NOT_FOUND:
    case rpc::ERROR_ARGUMENT:
      throw InvalidArgumentError(e.message());
    case rpc::ERROR_OBJECT_LOST:
      throw ObjectLostError(e.message());
    case rpc::ERROR_OWNER_DIED:
      throw OwnerDiedError(e.message());
    case rpc::ERROR_OBJECT_STORE_FULL:
      throw ObjectStoreFullError(e.message());
    case rpc::ERROR_ACTOR_DIED:
      throw ActorDiedError(e.message());
    case rpc::ERROR_CANCELLED:
      throw TaskCancelledError(e.message());
    default:
      throw RuntimeError("object " + id.Hex() + ": " + e.message());
  }
}

std::vector<StoreClient::View> ObjectAccess::GetFromStore(
    const std::vector<ObjectId>& ids,
    std::optional<std::chrono::steady_clock::time_point> deadline) {
  // A spilled object is restored into the store on its read; while the store is full of pinned
  // objects that needs to wait for room (readers finish, pins idle out), not fail as lost.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  if (deadline && *deadline < give_up) give_up = *deadline;
  auto backoff = std::chrono::milliseconds(1);
  std::vector<StoreClient::View> views = host_store_->Get(ids);
  while (true) {
    std::vector<size_t> full;
    for (size_t i = 0; i < views.size(); ++i) {
      if (views[i].status.code() == StatusCode::kOutOfMemory) full.push_back(i);
    }
    if (full.empty() || std::chrono::steady_clock::now() >= give_up) return views;
    host_store_->ReleaseIdle();
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
    std::vector<ObjectId> again;
    for (size_t i : full) again.push_back(ids[i]);
    std::vector<StoreClient::View> more = host_store_->Get(again);
    for (size_t k = 0; k < full.size(); ++k) views[full[k]] = std::move(more[k]);
  }
}

void ObjectAccess::WriteToStore(const ObjectId& id, const internal::EncodedValue& value,
                                const WorkerId& owner) {
  if (value.size > host_store_->capacity()) {
    throw ObjectStoreFullError("object " + id.Hex() + " is " + std::to_string(value.size) +
                               " bytes, larger than the whole object store (" +
                               std::to_string(host_store_->capacity()) +
                               " bytes); give prism more with InitOptions::host_store_memory or "
                               "prism start --object-store-memory");
  }
  // A store full of pinned objects may free up as readers finish: retry for a while.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto backoff = std::chrono::milliseconds(1);
  uint8_t* dst = nullptr;
  while (true) {
    auto created = host_store_->Create(id, value.size, owner);
    if (created.ok()) {
      dst = *created;
      break;
    }
    const Status& st = created.status();
    if (st.code() == StatusCode::kOutOfMemory)
      host_store_->ReleaseIdle();  // our own idle pins first
    if (st.code() == StatusCode::kAlreadyExists) {
      // An earlier attempt of this task (its worker died before replying) wrote it, or is still
      // half way (the daemon has not yet dropped what the dead worker left). Nobody has read it:
      // its caller never got a reply. Free it, and write this attempt's value.
      host_store_->Delete({id});
    }
    if ((st.code() != StatusCode::kOutOfMemory && st.code() != StatusCode::kAlreadyExists) ||
        std::chrono::steady_clock::now() > deadline) {
      if (st.code() == StatusCode::kOutOfMemory) throw ObjectStoreFullError(st.message());
      throw RuntimeError("cannot store object " + id.Hex() + ": " + st.ToString());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
  }
  try {
    value.write(reinterpret_cast<char*>(dst));
  } catch (...) {
    (void)host_store_->Abort(id);
    throw;
  }
  Status sealed = host_store_->Seal(id);
  if (!sealed.ok()) throw RuntimeError("cannot seal object " + id.Hex() + ": " + sealed.ToString());
  host_store_->Release(id);  // unpinned: the store may spill it; the owner frees it
}

internal::RefPtr ObjectAccess::Put(const internal::EncodedValue& value) {
  for (const auto& ref : value.nested) CheckCurrent(*ref);
  ObjectId id = context_.NextPut();
  StoredObject obj;
  if (value.size > internal::kMaxInlineBytes) {
    WriteToStore(id, value, worker_id_);
    obj = StoredObject::InStore(value.size);
  } else {
    obj = StoredObject::Value(value.ToString());
  }
  obj.contained = value.nested;
  internal::RefPtr handle = NewHandle(id);
  store_.Put(id, std::move(obj));
  return handle;
}

internal::RefPtr ObjectAccess::MakeRef(const ObjectId& id, internal::OwnerAddress owner) {
  if (!IsSelf(owner)) {
    if (store_.AddBorrowedRef(id, owner)) owners_.QueueAddBorrower(owner, id, worker_id_);
    return std::make_shared<internal::RefHandle>(id, std::move(owner), self_.runtime_generation);
  }
  if (!store_.AddRefIfPresent(id)) {  // (the message is built only when it is needed)
    store_.AddRefOr(
        id, StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                                "object " + id.Hex() + " was already freed by this process"));
  }
  return SelfHandle(id);
}

void ObjectAccess::CheckCurrent(const internal::RefHandle& ref) const {
  if (ref.generation() != self_.runtime_generation) {
    throw InvalidArgumentError("object " + ref.id().Hex() +
                               " belongs to an earlier prism session (before Shutdown())");
  }
}

std::vector<ObjectId> ObjectAccess::Prepare(const std::vector<const internal::RefHandle*>& refs) {
  std::vector<ObjectId> ids;
  ids.reserve(refs.size());
  for (const auto* r : refs) {
    CheckCurrent(*r);
    EnsureFetched(*r);
    ids.push_back(r->id());
  }
  return ids;
}

std::optional<MemoryStore::Clock::time_point> ObjectAccess::DeadlineOf(int64_t timeout_ms) {
  if (timeout_ms < 0) return std::nullopt;
  return MemoryStore::Clock::now() + std::chrono::milliseconds(timeout_ms);
}

std::vector<internal::EncodedView> ObjectAccess::Get(
    const std::vector<const internal::RefHandle*>& refs, int64_t timeout_ms) {
  std::vector<ObjectId> ids = Prepare(refs);
  std::optional<MemoryStore::Clock::time_point> deadline = DeadlineOf(timeout_ms);
  std::vector<bool> ready;
  std::vector<std::optional<StoredObject>> values;
  if (in_worker_task_()) {
    ready = store_.Wait(ids, ids.size(), MemoryStore::Clock::now(), &values);
    if (!std::all_of(ready.begin(), ready.end(), [](bool r) { return r; })) {
      // A task that waits gives its CPU back meanwhile, so what it waits for can run.
      blocked_(true);
      ready = store_.Wait(ids, ids.size(), deadline, &values);
      blocked_(false);
    }
  } else {
    ready = store_.Wait(ids, ids.size(), deadline, &values);
  }
  size_t not_ready = 0;
  for (bool r : ready) not_ready += r ? 0 : 1;
  if (not_ready > 0) {
    throw GetTimeoutError("Get timed out after " + std::to_string(timeout_ms) +
                          " ms: " + std::to_string(not_ready) + " of " +
                          std::to_string(ids.size()) + " objects not ready");
  }
  std::vector<internal::EncodedView> out(ids.size());
  std::vector<ObjectId> in_store;
  std::vector<size_t> in_store_at;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::optional<StoredObject>& obj = values[i];
    if (!obj) throw ObjectLostError("object " + ids[i].Hex() + " vanished while being read");
    if (obj->is_error()) ThrowStored(ids[i], obj->error);
    if (obj->in_store) {
      in_store.push_back(ids[i]);
      in_store_at.push_back(i);
    } else {
      out[i] = internal::EncodedView{*obj->data, obj->data};
    }
  }
  if (!in_store.empty()) {
    auto views = GetFromStore(in_store, deadline);
    std::string failed;
    for (size_t k = 0; k < views.size(); ++k) {
      if (!views[k].status.ok()) {
        failed = "object " + in_store[k].Hex() +
                 " is not in the object store: " + views[k].status.message();
        continue;
      }
      // The pin goes when the last reader of these bytes (a Buffer, say) lets go.
      std::shared_ptr<StoreClient> client = host_store_;
      ObjectId id = in_store[k];
      std::shared_ptr<const void> pin(views[k].data,
                                      [client, id](const void*) { client->Release(id); });
      out[in_store_at[k]] = internal::EncodedView{
          std::string_view(reinterpret_cast<const char*>(views[k].data), views[k].size),
          std::move(pin)};
    }
    if (!failed.empty()) throw ObjectLostError(failed);
  }
  return out;
}

void ObjectAccess::WhenReady(const internal::RefHandle& ref, std::function<void()> ready) {
  CheckCurrent(ref);
  EnsureFetched(ref);
  if (!store_.OnReady(ref.id(), [ready](const StoredObject&) { ready(); }))
    ready();  // (not referenced: a Get fails now)
}

std::vector<bool> ObjectAccess::Wait(const std::vector<const internal::RefHandle*>& refs,
                                     size_t num_returns, int64_t timeout_ms) {
  std::vector<ObjectId> ids = Prepare(refs);
  std::optional<MemoryStore::Clock::time_point> deadline = DeadlineOf(timeout_ms);
  if (!in_worker_task_()) return store_.Wait(ids, num_returns, deadline);
  std::vector<bool> ready = store_.Wait(ids, num_returns, MemoryStore::Clock::now());
  if (static_cast<size_t>(std::count(ready.begin(), ready.end(), true)) >= num_returns)
    return ready;
  if (timeout_ms == 0) return ready;  // a poll: nothing to lend the CPU for
  blocked_(true);
  ready = store_.Wait(ids, num_returns, deadline);
  blocked_(false);
  return ready;
}

void ObjectAccess::EnsureFetched(const internal::RefHandle& ref) {
  if (IsSelf(ref.owner())) return;
  {
    MutexLock lock(fetch_mu_);
    if (!fetching_.insert(ref.id()).second) return;
  }
  ObjectId id = ref.id();
  internal::OwnerAddress owner = ref.owner();
  asio::post(io_, [this, id, owner] {
    owners_.Fetch(id, owner, [this, id](const StoredObject& obj) {
      store_.Put(id, obj);
      MutexLock lock(fetch_mu_);
      fetching_.erase(id);
    });
  });
}

bool ObjectAccess::IsSelf(const internal::OwnerAddress& owner) const {
  return owner.worker_id == self_.address.worker_id;
}

internal::RefPtr ObjectAccess::NewHandle(const ObjectId& id) {
  store_.AddRef(id);
  return SelfHandle(id);
}

internal::RefPtr ObjectAccess::SelfHandle(const ObjectId& id) const {
  return std::make_shared<internal::RefHandle>(id, self_address_, self_.runtime_generation);
}

}  // namespace prism

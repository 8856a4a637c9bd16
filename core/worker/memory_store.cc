#include "worker/memory_store.h"

#include <algorithm>
#include <iterator>

#include "base/mutex.h"
#include "base/spin.h"

namespace prism {

void MemoryStore::AddRef(const ObjectId& id) {
  MutexLock lock(mu_);
  entries_[id].refs++;
}

bool MemoryStore::AddRefIfPresent(const ObjectId& id) {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return false;
  it->second.refs++;
  return true;
}

void MemoryStore::AddRefOr(const ObjectId& id, const StoredObject& if_missing) {
  MutexLock lock(mu_);
  auto [it, inserted] = entries_.try_emplace(id);
  it->second.refs++;
  if (inserted) it->second.object = std::make_unique<StoredObject>(if_missing);
}

bool MemoryStore::AddBorrowedRef(const ObjectId& id, const internal::OwnerAddress& owner) {
  MutexLock lock(mu_);
  Entry& e = entries_[id];
  e.refs++;
  Sharing& sh = e.share();
  if (!sh.borrowed) {
    sh.borrowed = true;
    sh.owner = owner;
  }
  if (sh.registered > 0) return false;
  sh.registered = 1;
  return true;
}

void MemoryStore::CreditRegistration(const ObjectId& id, uint32_t n) {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it != entries_.end()) it->second.share().registered += n;
}

void MemoryStore::UndoRegistration(const ObjectId& id) {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it != entries_.end() && it->second.sharing && it->second.sharing->registered > 0)
    it->second.sharing->registered--;
}

void MemoryStore::MaybeEraseLocked(Table::iterator it, Graveyard* g) {
  Entry& e = it->second;
  if (e.refs > 0 || !e.waiters.empty() || e.has_borrowers()) return;
  g->Add(entries_.extract(it));
}

void MemoryStore::BuryOne(const ObjectId& id, Entry& e) {
  // Whoever waited for a value that will now never be kept learns so at once.
  if (e.has_callbacks()) {
    StoredObject lost =
        StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                            "object " + id.Hex() + " was freed by its owner (no references left)");
    for (auto& cb : e.sharing->callbacks) cb(lost);
  }
  if (on_free_) {
    FreedObject f;
    f.id = id;
    f.borrowed = e.borrowed();
    if (e.sharing) {
      f.owner = e.sharing->owner;
      f.registered = e.sharing->registered;
    }
    f.in_store = !f.borrowed && e.object && e.object->in_store;
    f.actor = !f.borrowed && e.object && e.object->actor_handle;
    if (!f.borrowed && e.object) f.device_producer = e.object->device_producer;
    on_free_(std::move(f));
  }
}

void MemoryStore::Bury(Graveyard& g) {
  if (!g.first.empty()) BuryOne(g.first.key(), g.first.mapped());
  for (auto& node : g.more) BuryOne(node.key(), node.mapped());
  // Destroying the entries releases the refs their values contained (re-entering this store).
  g.first = Table::node_type();
  g.more.clear();
}

void MemoryStore::RemoveRef(const ObjectId& id) {
  Graveyard g;
  {
    MutexLock lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    --it->second.refs;
    MaybeEraseLocked(it, &g);
  }
  Bury(g);
}

bool MemoryStore::AddBorrower(const ObjectId& id, const WorkerId& worker, uint32_t n) {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.borrowed()) return false;
  it->second.share().borrowers[worker] += n;
  return true;
}

void MemoryStore::RemoveBorrower(const ObjectId& id, const WorkerId& worker, uint32_t n) {
  Graveyard g;
  {
    MutexLock lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || !it->second.sharing) return;
    auto& borrowers = it->second.sharing->borrowers;
    auto b = borrowers.find(worker);
    if (b == borrowers.end()) return;
    b->second -= std::min(n, b->second);
    if (b->second == 0) borrowers.erase(b);
    MaybeEraseLocked(it, &g);
  }
  Bury(g);
}

void MemoryStore::RemoveBorrowerEverywhere(const WorkerId& worker) {
  Graveyard g;
  {
    MutexLock lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto next = std::next(it);
      if (it->second.sharing && it->second.sharing->borrowers.erase(worker) > 0)
        MaybeEraseLocked(it, &g);
      it = next;
    }
  }
  Bury(g);
}

size_t MemoryStore::NumBorrowers(const ObjectId& id) const {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  return it == entries_.end() || !it->second.sharing ? 0 : it->second.sharing->borrowers.size();
}

void MemoryStore::MakeReadyLocked(Entry& e, std::unique_ptr<StoredObject> object,
                                  std::vector<Callback>* run) {
  e.object = std::move(object);
  for (Waiter* w : e.waiters) {
    if (w->remaining > 0 && --w->remaining == 0) {
      w->done.store(true, std::memory_order_release);
      w->cv.notify_one();
    }
  }
  e.waiters.clear();
  if (e.has_callbacks()) {
    for (auto& cb : e.sharing->callbacks) run->push_back(std::move(cb));
    e.sharing->callbacks.clear();
  }
}

bool MemoryStore::Put(const ObjectId& id, StoredObject object) {
  std::vector<Callback> run;
  StoredObject copy;
  auto value = std::make_unique<StoredObject>(std::move(object));  // allocated outside the lock
  {
    MutexLock lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.object) return false;
    if (it->second.has_callbacks()) copy = *value;  // (the callbacks run outside the lock)
    MakeReadyLocked(it->second, std::move(value), &run);
  }
  for (auto& cb : run) cb(copy);
  return true;
}

bool MemoryStore::Reset(const ObjectId& id) {
  std::unique_ptr<StoredObject> old;  // released outside the lock (its contained refs)
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.object) return false;
  old.swap(it->second.object);
  return true;
}

std::optional<StoredObject> MemoryStore::GetIfReady(const ObjectId& id) const {
  MutexLock lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.object) return std::nullopt;
  return *it->second.object;
}

bool MemoryStore::Contains(const ObjectId& id) const {
  MutexLock lock(mu_);
  return entries_.count(id) > 0;
}

bool MemoryStore::OnReady(const ObjectId& id, Callback cb) {
  std::optional<StoredObject> ready;
  {
    MutexLock lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    if (!it->second.object) {
      it->second.share().callbacks.push_back(std::move(cb));
      return true;
    }
    ready = *it->second.object;
  }
  cb(*ready);
  return true;
}

std::vector<bool> MemoryStore::Wait(const std::vector<ObjectId>& ids, size_t num_ready,
                                    std::optional<Clock::time_point> deadline,
                                    std::vector<std::optional<StoredObject>>* values) {
  // One lookup per id: entries waited on are kept by their pointers (the table's nodes stay
  // put, and an entry with a waiter is never erased), which matters for a Get of thousands of
  // refs, where every lookup is a cache miss.
  std::vector<bool> ready(ids.size(), false);
  if (values != nullptr) values->assign(ids.size(), std::nullopt);
  std::vector<Entry*> pending(ids.size(), nullptr);
  Graveyard g;
  UniqueLock lock(mu_);
  size_t n = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = entries_.find(ids[i]);
    if (it == entries_.end()) continue;
    if (it->second.object) {
      ready[i] = true;
      ++n;
      if (values != nullptr) (*values)[i] = *it->second.object;
    } else {
      pending[i] = &it->second;
    }
  }
  if (n >= num_ready) return ready;
  Waiter w{num_ready - n, {}};
  for (Entry* e : pending) {
    if (e != nullptr) e->waiters.push_back(&w);
  }
  // A local task's reply often comes within a few tens of microseconds: check for it before
  // sleeping, which would add a kernel wake-up to the round trip.
  const auto waiting_since = Clock::now();
  auto budget = spin_.Budget();
  if (deadline) budget = std::min<std::chrono::nanoseconds>(budget, *deadline - Clock::now());
  if (budget.count() > 0) {
    lock.unlock();
    bool polled = false;
    auto ready = [&] {
      if (spin_poll_ && !w.done.load(std::memory_order_acquire)) {
        spin_poll_(false);
        polled = true;
      }
      return w.done.load(std::memory_order_acquire);
    };
    const bool came = SpinFor(ready, budget);
    if (polled) spin_poll_(true);
    if (came) {
      // The thread that made it ready may still hold the lock for a moment: sleeping on it now
      // would cost the wake-up the spin saved.
      lock.LockSpinning(budget);
    } else {
      lock.lock();
    }
  }
  auto done = [&] { return w.remaining == 0; };
  if (deadline) {
    w.cv.wait_until(lock, *deadline, done);
  } else {
    w.cv.wait(lock, done);
  }
  if (done()) spin_.Record(Clock::now() - waiting_since);
  std::vector<size_t> unreferenced;
  for (size_t i = 0; i < ids.size(); ++i) {
    Entry* e = pending[i];
    if (e == nullptr) continue;
    auto& ws = e->waiters;
    ws.erase(std::remove(ws.begin(), ws.end(), &w), ws.end());
    if (e->object) {
      ready[i] = true;
      if (values != nullptr) (*values)[i] = *e->object;
    }
    if (e->refs <= 0) unreferenced.push_back(i);
  }
  // Entries whose last reference went while this waited go now (after the loop above: an id
  // may be listed twice).
  for (size_t i : unreferenced) {
    auto it = entries_.find(ids[i]);
    if (it != entries_.end()) MaybeEraseLocked(it, &g);
  }
  lock.unlock();
  Bury(g);
  return ready;
}

void MemoryStore::FailAllPending(const StoredObject& object) {
  std::vector<Callback> run;
  {
    MutexLock lock(mu_);
    for (auto& [id, e] : entries_) {
      if (!e.object) MakeReadyLocked(e, std::make_unique<StoredObject>(object), &run);
    }
  }
  for (auto& cb : run) cb(object);
}

size_t MemoryStore::size() const {
  MutexLock lock(mu_);
  return entries_.size();
}

}  // namespace prism

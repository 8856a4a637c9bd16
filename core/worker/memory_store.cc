#include "worker/memory_store.h"

#include <algorithm>

namespace prism {

void MemoryStore::AddRef(const ObjectId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_[id].refs++;
}

void MemoryStore::RemoveRef(const ObjectId& id) {
  std::vector<Callback> orphaned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    if (--it->second.refs > 0 || !it->second.waiters.empty()) return;
    orphaned = std::move(it->second.callbacks);
    entries_.erase(it);
  }
  // Whoever waited for a value that will now never be kept learns so at once.
  if (!orphaned.empty()) {
    StoredObject lost = StoredObject::Error(
        rpc::ERROR_OBJECT_LOST, "object " + id.Hex() + " was freed by its owner (no references left)");
    for (auto& cb : orphaned) cb(lost);
  }
}

void MemoryStore::MakeReadyLocked(Entry& e, StoredObject object, std::vector<Callback>* run) {
  e.object = std::move(object);
  for (Waiter* w : e.waiters) {
    if (w->remaining > 0 && --w->remaining == 0) w->cv.notify_one();
  }
  e.waiters.clear();
  for (auto& cb : e.callbacks) run->push_back(std::move(cb));
  e.callbacks.clear();
}

bool MemoryStore::Put(const ObjectId& id, StoredObject object) {
  std::vector<Callback> run;
  StoredObject copy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.object.has_value()) return false;
    copy = object;
    MakeReadyLocked(it->second, std::move(object), &run);
  }
  for (auto& cb : run) cb(copy);
  return true;
}

std::optional<StoredObject> MemoryStore::GetIfReady(const ObjectId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.object;
}

bool MemoryStore::Contains(const ObjectId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.count(id) > 0;
}

bool MemoryStore::OnReady(const ObjectId& id, Callback cb) {
  std::optional<StoredObject> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    if (!it->second.object) {
      it->second.callbacks.push_back(std::move(cb));
      return true;
    }
    ready = it->second.object;
  }
  cb(*ready);
  return true;
}

std::vector<bool> MemoryStore::Wait(const std::vector<ObjectId>& ids, size_t num_ready,
                                    std::optional<Clock::time_point> deadline) {
  std::vector<bool> ready(ids.size(), false);
  std::unique_lock<std::mutex> lock(mu_);
  auto count_ready = [&] {
    size_t n = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      auto it = entries_.find(ids[i]);
      ready[i] = it != entries_.end() && it->second.object.has_value();
      n += ready[i] ? 1 : 0;
    }
    return n;
  };
  size_t n = count_ready();
  if (n >= num_ready) return ready;
  Waiter w{num_ready - n, {}};
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ready[i]) entries_[ids[i]].waiters.push_back(&w);
  }
  auto done = [&] { return w.remaining == 0; };
  if (deadline) {
    w.cv.wait_until(lock, *deadline, done);
  } else {
    w.cv.wait(lock, done);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ready[i]) continue;
    auto it = entries_.find(ids[i]);
    if (it == entries_.end()) continue;
    auto& ws = it->second.waiters;
    ws.erase(std::remove(ws.begin(), ws.end(), &w), ws.end());
    if (it->second.refs <= 0 && ws.empty() && !it->second.object) entries_.erase(it);
  }
  count_ready();
  return ready;
}

void MemoryStore::FailAllPending(const StoredObject& object) {
  std::vector<Callback> run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : entries_) {
      if (!e.object) MakeReadyLocked(e, object, &run);
    }
  }
  for (auto& cb : run) cb(object);
}

size_t MemoryStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace prism

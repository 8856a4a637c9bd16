#include "object_store/store_client.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/logging.h"
#include "base/mutex.h"
#include "rpc/connection.h"

namespace prism {
namespace {

Status FromError(const rpc::ErrorReply& e) {
  return Status(static_cast<StatusCode>(e.code()), e.message());
}

}  // namespace

Result<std::unique_ptr<StoreClient>> StoreClient::Connect(const std::string& daemon_socket,
                                                          const std::string& token,
                                                          const WorkerId& self,
                                                          std::chrono::milliseconds idle_hold) {
  rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_CLIENT, token);
  hello.mutable_hello()->set_want_store(true);
  hello.mutable_hello()->set_worker_id(self.Binary());
  rpc::Welcome welcome;
  PRISM_ASSIGN_OR_RETURN(rpc::BlockingClient conn,
                         rpc::BlockingClient::ConnectAndHello(daemon_socket, hello, &welcome));
  int fd = conn.TakeReceivedFd();
  if (fd < 0) return Status::ProtocolError("the node daemon sent no object store descriptor");
  uint64_t capacity = welcome.store_capacity();
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < capacity || capacity == 0) {
    ::close(fd);
    return Status::ProtocolError("the object store descriptor does not match its announced size");
  }
  void* base = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the memory
  if (base == MAP_FAILED) {
    return Status::IOError(std::string("cannot map the object store: ") + std::strerror(err));
  }
  // Large pages where the kernel offers them for shared memory (fewer TLB misses on big copies).
  ::madvise(base, capacity, MADV_HUGEPAGE);
  std::unique_ptr<StoreClient> c(new StoreClient());
  c->base_ = static_cast<uint8_t*>(base);
  c->capacity_ = capacity;
  c->idle_hold_ = idle_hold;
  c->conn_ = std::move(conn);
  return c;
}

StoreClient::~StoreClient() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  sweep_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  if (base_ != nullptr) ::munmap(base_, capacity_);
}

void StoreClient::Disconnect() {
  MutexLock lock(mu_);
  {
    MutexLock send_lock(send_mu_);
    conn_.Shutdown();  // (closed with the client: a caller may be reading it now)
  }
  broken_ = true;
  {
    MutexLock reply_lock(reply_mu_);
    reply_cv_.notify_all();
  }
  held_.clear();  // the daemon dropped this client's pins with the connection
  idle_ = 0;
}

size_t StoreClient::held() const {
  MutexLock lock(mu_);
  return held_.size();
}

void StoreClient::ReleaseIdle() {
  MutexLock lock(mu_);
  ReleaseIdleLocked(std::chrono::steady_clock::time_point::max());
}

void StoreClient::ReleaseIdleLocked(std::chrono::steady_clock::time_point before) {
  if (idle_ == 0) return;
  std::vector<ObjectId> release;
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->second.readers == 0 && it->second.idle_since <= before) {
      release.push_back(it->first);
      it = held_.erase(it);
      idle_--;
    } else {
      ++it;
    }
  }
  SendRelease(release);
}

void StoreClient::SendRelease(const std::vector<ObjectId>& ids) {
  if (ids.empty()) return;
  rpc::Envelope req;
  req.mutable_store_release()->set_request_id(next_request_id_++);
  for (const auto& id : ids) req.mutable_store_release()->add_object_ids(id.Binary());
  SendOneWay(req);
}

void StoreClient::Sweep() {
  UniqueLock lock(mu_);
  while (!stopping_) {
    if (idle_ == 0) {
      sweeper_asleep_ = true;
      sweep_cv_.wait(lock);
      sweeper_asleep_ = false;
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    ReleaseIdleLocked(now - idle_hold_);
    sweep_cv_.wait_for(lock, idle_hold_ / 2);
  }
}

void StoreClient::LogError(const rpc::ErrorReply& e) {
  PRISM_LOG_WARN("object store: {}", e.message());
}

Result<rpc::Envelope> StoreClient::Call(const rpc::Envelope& req, uint64_t request_id) {
  if (broken_) return Status::Unavailable("the object store connection is closed");
  {
    MutexLock reply_lock(reply_mu_);
    awaiting_.insert(request_id);
  }
  {
    MutexLock send_lock(send_mu_);
    if (!conn_.Send(req).ok()) broken_ = true;
  }
  // Several threads may wait at once (a create waiting for a spill does not hold up another
  // thread's get): one of them reads the next frame and hands it to whoever it answers.
  UniqueLock lock(reply_mu_);
  while (true) {
    if (auto it = replies_.find(request_id); it != replies_.end()) {
      Result<rpc::Envelope> mine = std::move(it->second);
      replies_.erase(it);
      awaiting_.erase(request_id);
      return mine;
    }
    if (broken_) {
      awaiting_.erase(request_id);
      return Status::Unavailable("lost the object store connection");
    }
    if (reading_) {
      reply_cv_.wait(lock);
      continue;
    }
    reading_ = true;
    lock.unlock();
    auto frame = conn_.Receive(-1);
    lock.lock();
    reading_ = false;
    if (!frame.ok()) {
      broken_ = true;
    } else if (frame->has_error()) {
      uint64_t rid = frame->error().request_id();
      if (awaiting_.count(rid) > 0) {
        replies_.emplace(rid, FromError(frame->error()));
      } else {
        LogError(frame->error());  // an earlier one-way request failed
      }
    } else if (frame->has_store_reply() && awaiting_.count(frame->store_reply().request_id()) > 0) {
      uint64_t rid = frame->store_reply().request_id();
      replies_.emplace(rid, std::move(*frame));
    }
    reply_cv_.notify_all();
  }
}

void StoreClient::SendOneWay(const rpc::Envelope& req) {
  if (broken_) return;
  MutexLock send_lock(send_mu_);
  if (!conn_.Send(req).ok()) broken_ = true;
}

Result<uint8_t*> StoreClient::Create(const ObjectId& id, uint64_t size, const WorkerId& owner) {
  uint64_t rid = next_request_id_++;
  rpc::Envelope req;
  auto* c = req.mutable_store_create();
  c->set_request_id(rid);
  c->set_object_id(id.Binary());
  c->set_size(size);
  c->set_owner_worker_id(owner.Binary());
  PRISM_ASSIGN_OR_RETURN(rpc::Envelope reply, Call(req, rid));
  const auto& objs = reply.store_reply().objects();
  if (objs.size() != 1 || objs[0].offset() > capacity_ || size > capacity_ - objs[0].offset()) {
    return Status::ProtocolError("the object store answered Create with a bad location");
  }
  return base_ + objs[0].offset();
}

Status StoreClient::Seal(const ObjectId& id) {
  uint64_t rid = next_request_id_++;
  rpc::Envelope req;
  req.mutable_store_seal()->set_request_id(rid);
  req.mutable_store_seal()->set_object_id(id.Binary());
  return Call(req, rid).status();
}

Status StoreClient::Abort(const ObjectId& id) {
  uint64_t rid = next_request_id_++;
  rpc::Envelope req;
  req.mutable_store_abort()->set_request_id(rid);
  req.mutable_store_abort()->set_object_id(id.Binary());
  return Call(req, rid).status();
}

std::vector<StoreClient::View> StoreClient::Get(const std::vector<ObjectId>& ids) {
  std::vector<View> out(ids.size());
  UniqueLock lock(mu_);
  // Held already: a lookup. (The same id twice in `ids` is one more reader each time.)
  std::vector<size_t> ask;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = held_.find(ids[i]);
    if (it == held_.end()) {
      ask.push_back(i);
      continue;
    }
    if (it->second.readers++ == 0) idle_--;
    out[i].data = it->second.data;
    out[i].size = it->second.size;
  }
  if (ask.empty()) return out;
  uint64_t rid = next_request_id_++;
  rpc::Envelope req;
  req.mutable_store_get()->set_request_id(rid);
  for (size_t i : ask) req.mutable_store_get()->add_object_ids(ids[i].Binary());
  lock.unlock();  // others' lookups go on while the daemon answers
  auto reply = Call(req, rid);
  lock.lock();
  if (!reply.ok()) {
    for (size_t i : ask) out[i].status = reply.status();
    return out;
  }
  const auto& objs = reply->store_reply().objects();
  for (size_t k = 0; k < ask.size(); ++k) {
    const size_t i = ask[k];
    if (static_cast<int>(k) >= objs.size()) {
      out[i].status = Status::ProtocolError("the object store answered too few objects");
      continue;
    }
    const auto& o = objs[static_cast<int>(k)];
    if (o.code() != 0) {
      out[i].status = Status(static_cast<StatusCode>(o.code()), o.message());
    } else if (o.offset() > capacity_ || o.size() > capacity_ - o.offset()) {
      out[i].status = Status::ProtocolError("the object store answered a bad location");
    } else {
      out[i].data = base_ + o.offset();
      out[i].size = o.size();
      auto [it, fresh] = held_.try_emplace(ids[i], Held{out[i].data, out[i].size, 1, {}});
      if (!fresh) {
        // Asked twice in one call: the daemon pinned it twice; keep one pin.
        if (it->second.readers++ == 0) idle_--;
        SendRelease({ids[i]});
      }
    }
  }
  return out;
}

void StoreClient::Release(const ObjectId& id) {
  MutexLock lock(mu_);
  auto it = held_.find(id);
  if (it == held_.end()) {
    // A writer's pin (Create), or one the daemon dropped with a broken connection.
    SendRelease({id});
    return;
  }
  if (it->second.readers == 0) return;
  if (--it->second.readers > 0) return;
  it->second.idle_since = std::chrono::steady_clock::now();
  if (idle_hold_.count() <= 0) {
    idle_++;
    ReleaseIdleLocked(it->second.idle_since);
    return;
  }
  if (idle_++ == 0) {
    if (!sweeper_.joinable()) {
      sweeper_ = std::thread([this] { Sweep(); });  // (it finds this idle pin when it starts)
    } else if (sweeper_asleep_) {
      sweep_cv_.notify_one();
    }
  }
}

void StoreClient::Delete(const std::vector<ObjectId>& ids) {
  if (ids.empty()) return;
  MutexLock lock(mu_);
  // Idle pins on them go first (in order on the connection, so the daemon frees them now).
  std::vector<ObjectId> release;
  for (const auto& id : ids) {
    auto it = held_.find(id);
    if (it == held_.end() || it->second.readers > 0) continue;
    release.push_back(id);
    held_.erase(it);
    idle_--;
  }
  SendRelease(release);
  rpc::Envelope req;
  req.mutable_store_delete()->set_request_id(next_request_id_++);
  for (const auto& id : ids) req.mutable_store_delete()->add_object_ids(id.Binary());
  SendOneWay(req);
}

}  // namespace prism

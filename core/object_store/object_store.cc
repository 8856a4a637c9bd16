#include "object_store/object_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include "base/logging.h"

namespace prism {
namespace {

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::string Bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 20)) return std::to_string(n >> 20) + " MiB";
  if (n >= (uint64_t{1} << 10)) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " bytes";
}

// Writes `size` bytes from `buf` to the file at `path` (created, mode 0600), or reads them back
// into `buf`; the disk thread's part of a spill or a restore.
Status TransferFile(const std::string& path, uint8_t* buf, uint64_t size, bool write) {
  int fd = write ? ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(Errno(("open " + path).c_str()));
  Status st;
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = write ? ::pwrite(fd, buf + done, size - done, static_cast<off_t>(done))
                      : ::pread(fd, buf + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      st = Status::IOError(n == 0 && !write ? "spill file " + path + " is truncated"
                                            : Errno(((write ? "write " : "read ") + path).c_str()));
      break;
    }
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return st;
}

// MemAvailable from /proc/meminfo (the machine's physical memory where it cannot be read).
uint64_t AvailableMemory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib << 10;
  }
  return uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGE_SIZE));
}

}  // namespace

uint64_t DefaultObjectStoreCapacity() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page = ::sysconf(_SC_PAGE_SIZE);
  uint64_t total = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : (uint64_t{1} << 30);
  // In a container, the cgroup's memory limit is what there is (cgroup v2, then v1).
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream f(path);
    std::string v;
    if (f >> v && !v.empty() && v != "max") {
      char* end = nullptr;
      unsigned long long limit = std::strtoull(v.c_str(), &end, 10);
      if (end != v.c_str() && limit > 0 && limit < total) total = limit;
    }
  }
  return std::max<uint64_t>(total / 10 * 3, uint64_t{64} << 20);
}

Result<std::unique_ptr<ObjectStore>> ObjectStore::Open(ObjectStoreConfig config) {
  if (config.capacity < 4096) {
    return Status::InvalidArgument("the object store needs at least 4096 bytes, not " +
                                   std::to_string(config.capacity));
  }
  int fd = ::memfd_create("prism-object-store", MFD_CLOEXEC);
  if (fd < 0) return Status::IOError(Errno("memfd_create"));
  if (::ftruncate(fd, static_cast<off_t>(config.capacity)) != 0) {
    Status st = Status::IOError(Errno("ftruncate of the object store"));
    ::close(fd);
    return st;
  }
  if (config.prefault) {
    // Refused up front when the memory is not there: allocating it anyway would leave the
    // kernel to kill someone.
    uint64_t available = AvailableMemory();
    if (config.capacity > available) {
      ::close(fd);
      return Status::OutOfMemory("cannot pre-fault a " + Bytes(config.capacity) +
                                 " object store: only " + Bytes(available) +
                                 " of memory is available");
    }
    int err = ::posix_fallocate(fd, 0, static_cast<off_t>(config.capacity));
    if (err != 0) {
      ::close(fd);
      return Status::OutOfMemory("cannot pre-fault the " + Bytes(config.capacity) +
                                 " object store: " + std::strerror(err) +
                                 " (start without --object-store-prefault, or with a smaller "
                                 "--object-store-memory)");
    }
  }
  void* base = ::mmap(nullptr, config.capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    Status st = Status::IOError(Errno("mmap of the object store"));
    ::close(fd);
    return st;
  }
  return std::unique_ptr<ObjectStore>(
      new ObjectStore(std::move(config), fd, static_cast<uint8_t*>(base)));
}

ObjectStore::ObjectStore(ObjectStoreConfig config, int fd, uint8_t* base)
    : config_(std::move(config)), fd_(fd), base_(base), alloc_(config_.capacity) {}

ObjectStore::~ObjectStore() {
  RemoveSpillFiles();
  ::munmap(base_, config_.capacity);
  ::close(fd_);
}

std::string ObjectStore::SpillPath(const ObjectId& id) const {
  return config_.spill_dir + "/" + id.Hex();
}

Result<ObjectStore::Located> ObjectStore::Create(ClientId client, const ObjectId& id, uint64_t size,
                                                 const WorkerId& owner) {
  // (A deferred answer lands in `out`, which outlives this call, and is not awaited.)
  auto out = std::make_shared<std::optional<Result<Located>>>();
  CreateAsync(client, id, size, owner, [out](Result<Located> r) { *out = std::move(r); });
  if (!*out) return Status::Internal("Create waits for spills: use CreateAsync with run_io");
  return std::move(**out);
}

void ObjectStore::CreateAsync(ClientId client, const ObjectId& id, uint64_t size,
                              const WorkerId& owner, Done done) {
  if (id.IsNil()) return done(Status::InvalidArgument("object id is nil"));
  if (size == 0) return done(Status::InvalidArgument("an object needs at least one byte"));
  if (objects_.count(id) > 0) {
    return done(Status::AlreadyExists("object " + id.Hex() + " already exists in the object store" +
                                      (objects_[id].sealed ? " (sealed)" : " (being written)")));
  }
  if (size > alloc_.capacity()) {
    return done(Status::OutOfMemory(
        "object " + id.Hex() + " is " + Bytes(size) + ", larger than the whole object store (" +
        Bytes(alloc_.capacity()) + "); start prism with a larger --object-store-memory"));
  }
  // The entry exists from now on (a second create of the id is refused), pinned by its writer;
  // it is in memory once it has room.
  Object& o = objects_[id];
  o.generation = ++generations_;
  o.size = size;
  o.creator = client;
  o.owner = owner;
  o.last_use = ++clock_;
  o.pins[client] = 1;
  o.total_pins = 1;
  client_pins_[client][id] += 1;
  if (!waiting_.empty() &&
      alloc_.capacity() - alloc_.used() + spilling_bytes_ >= size + waiting_bytes_) {
    // Others wait for spills; one that fits in the room there is now is not held up behind them
    // as long as the spills under way still free what they need (Pump gives them that room as
    // each spill ends).
    if (auto off = alloc_.Allocate(size)) {
      o.offset = *off;
      o.in_memory = true;
      return done(Located{o.offset, o.size});
    }
  }
  waiting_.push_back(Waiting{id, size, false, client, std::move(done), o.generation});
  waiting_bytes_ += size;
  Pump();
}

Status ObjectStore::FullError(uint64_t size, const ObjectId& for_id) const {
  StoreTableStats s = stats();
  std::string msg = "the object store is full: " + Bytes(size) + " needed for object " +
                    for_id.Hex() + ", " + Bytes(s.pinned) + " of " + Bytes(s.capacity) +
                    " are pinned by writers and readers";
  if (!last_spill_error_.ok()) msg += ", and spilling failed: " + last_spill_error_.message();
  return Status::OutOfMemory(msg);
}

void ObjectStore::RunIo(std::function<void()> io, std::function<void()> then) {
  if (config_.run_io) {
    config_.run_io(std::move(io), std::move(then));
  } else {
    io();
    then();
  }
}

void ObjectStore::Pump() {
  if (pumping_) {  // a completion inside (inline I/O): the loop below looks again
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    while (!waiting_.empty()) {
      Waiting& w = waiting_.front();
      auto it = objects_.find(w.id);
      if (it == objects_.end() || it->second.generation != w.generation ||
          (w.restore && (it->second.deleted || it->second.in_memory))) {
        // Gone meanwhile (its client went, or its owner freed it while it waited).
        Waiting gone = std::move(waiting_.front());
        waiting_.pop_front();
        waiting_bytes_ -= gone.size;
        if (gone.done)
          gone.done(Status::NotFound("object " + gone.id.Hex() + " went while it waited for room"));
        if (gone.restore && it != objects_.end() && it->second.generation == gone.generation) {
          it->second.restoring = false;
        }
        continue;
      }
      if (auto off = alloc_.Allocate(w.size)) {
        Waiting ready = std::move(waiting_.front());
        waiting_.pop_front();
        waiting_bytes_ -= ready.size;
        Object& o = it->second;
        if (ready.restore) {
          StartRestore(ready.id, *off);
        } else {
          o.offset = *off;
          o.in_memory = true;
          ready.done(Located{o.offset, o.size});
        }
        continue;
      }
      uint64_t needed = w.size;
      if (StartSpills(needed) || spilling_bytes_ > 0) break;  // room comes when they finish
      // Nothing to spill and nothing spilling: it cannot fit now.
      Waiting failed = std::move(waiting_.front());
      waiting_.pop_front();
      waiting_bytes_ -= failed.size;
      Status err = FullError(failed.size, failed.id);
      if (failed.restore) {
        Object& o = it->second;
        o.restoring = false;
        auto readers = std::move(o.readers);
        o.readers.clear();
        for (auto& [c, d] : readers) d(err);
      } else {
        // The writer never got its location: the entry goes.
        Object& o = it->second;
        o.deleted = true;
        Unpin(failed.id, o, failed.client, o.pins[failed.client]);
        MaybeFree(it);
        failed.done(err);
      }
    }
  } while (pump_again_);
  pumping_ = false;
}

bool ObjectStore::StartSpills(uint64_t needed) {
  const uint64_t free_now = alloc_.capacity() - alloc_.used();
  // Enough is on its way. (With nothing on its way, free bytes that do not fit are fragments:
  // spilling one more object merges holes.)
  if (spilling_bytes_ > 0 && free_now + spilling_bytes_ >= needed) return false;
  std::vector<std::pair<uint64_t, ObjectId>> candidates;
  const auto now = std::chrono::steady_clock::now();
  uint64_t spillable = 0;
  for (auto& [id, o] : objects_) {
    if (o.in_memory && o.sealed && o.total_pins == 0 && !o.deleted && !o.spilling &&
        now - o.spill_failed > std::chrono::seconds(1)) {
      candidates.emplace_back(o.last_use, id);
      spillable += alloc_.BlockSize(o.offset);
    }
  }
  // Even spilling everything would not make room: do not spill for nothing.
  if (free_now + spilling_bytes_ + spillable < needed) return false;
  std::sort(candidates.begin(), candidates.end());
  bool started = false;
  for (auto& [use, candidate] : candidates) {
    const ObjectId id = candidate;  // (a name of its own: lambdas below capture it)
    if (started && alloc_.capacity() - alloc_.used() + spilling_bytes_ >= needed) break;
    auto oit = objects_.find(id);
    if (oit == objects_.end() || !oit->second.in_memory || oit->second.spilling)
      continue;  // changed by an inline spill
    Object& o = oit->second;
    uint64_t block = alloc_.BlockSize(o.offset);
    o.spilling = true;
    o.total_pins++;  // the store's own pin: the block stays while it is being written
    spilling_bytes_ += block;
    started = true;
    if (o.spill_file) {  // a copy is on disk already (from an earlier spill)
      OnSpilled(id, Status::OK());
      continue;
    }
    std::string path = SpillPath(id);
    std::string dir = config_.spill_dir;
    uint8_t* src = base_ + o.offset;  // only read: the object is sealed
    uint64_t size = o.size;
    auto result = std::make_shared<Status>();
    RunIo(
        [dir, path, src, size, result] {
          std::error_code ec;
          std::filesystem::create_directories(dir, ec);
          *result = TransferFile(path, src, size, /*write=*/true);
          if (!result->ok()) ::unlink(path.c_str());  // a partial copy is no copy
        },
        [this, id, result] { OnSpilled(id, *result); });
  }
  return started;
}

void ObjectStore::OnSpilled(const ObjectId& id, const Status& st) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  Object& o = it->second;
  spilling_bytes_ -= std::min(spilling_bytes_, alloc_.BlockSize(o.offset));
  o.spilling = false;
  o.total_pins--;
  if (st.ok()) {
    if (!o.spill_file) spills_total_++;
    o.spill_file = true;
    last_spill_error_ = Status::OK();
    // Read meanwhile (pinned), or freed meanwhile (MaybeFree): then it stays, or goes, as is.
    if (o.total_pins == 0 && !o.deleted) {
      alloc_.Free(o.offset);
      o.in_memory = false;
    }
  } else {
    // The object stays in memory; the requests that waited for room are told why, if nothing
    // else makes room.
    PRISM_LOG_WARN("cannot spill object {}: {}", id.Hex(), st.message());
    o.spill_failed = std::chrono::steady_clock::now();
    last_spill_error_ = st;
  }
  MaybeFree(it);
  Pump();
}

void ObjectStore::StartRestore(const ObjectId& id, uint64_t offset) {
  std::string path = SpillPath(id);
  uint8_t* dst = base_ + offset;
  uint64_t size = objects_.at(id).size;
  uint64_t generation = objects_.at(id).generation;
  auto result = std::make_shared<Status>();
  RunIo([path, dst, size, result] { *result = TransferFile(path, dst, size, /*write=*/false); },
        [this, id, generation, offset, result] { OnRestored(id, generation, offset, *result); });
}

void ObjectStore::OnRestored(const ObjectId& id, uint64_t generation, uint64_t offset,
                             const Status& st) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.generation != generation) {
    // Freed while it was read back (its readers were told then), perhaps created anew since.
    alloc_.Free(offset);
    Pump();
    return;
  }
  Object& o = it->second;
  o.restoring = false;
  auto readers = std::move(o.readers);
  o.readers.clear();
  if (!st.ok() || o.deleted) {
    alloc_.Free(offset);
    Status err =
        st.ok() ? Status::NotFound("object " + id.Hex() + " was freed while it was restored") : st;
    for (auto& [c, d] : readers) d(err);
    MaybeFree(it);
    Pump();
    return;
  }
  o.offset = offset;
  o.in_memory = true;
  restores_total_++;
  for (auto& [c, d] : readers) d(PinLocated(c, id, o));
  Pump();
}

Result<ObjectStore::Located> ObjectStore::PinLocated(ClientId client, const ObjectId& id,
                                                     Object& o) {
  o.last_use = ++clock_;
  o.pins[client]++;
  o.total_pins++;
  client_pins_[client][id]++;
  return Located{o.offset, o.size};
}

Status ObjectStore::Seal(ClientId client, const ObjectId& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return Status::NotFound("object " + id.Hex() + " is not in the store");
  Object& o = it->second;
  if (o.sealed) return Status::InvalidArgument("object " + id.Hex() + " is sealed already");
  if (o.creator != client) {
    return Status::PermissionDenied("object " + id.Hex() + " was created by another client");
  }
  o.sealed = true;
  return Status::OK();
}

Status ObjectStore::Abort(ClientId client, const ObjectId& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return Status::NotFound("object " + id.Hex() + " is not in the store");
  Object& o = it->second;
  if (o.sealed)
    return Status::InvalidArgument("object " + id.Hex() + " is sealed: it cannot be aborted");
  if (o.creator != client) {
    return Status::PermissionDenied("object " + id.Hex() + " was created by another client");
  }
  o.deleted = true;
  Unpin(id, o, client, o.pins[client]);
  MaybeFree(it);
  return Status::OK();
}

Result<ObjectStore::Located> ObjectStore::Get(ClientId client, const ObjectId& id) {
  auto out = std::make_shared<std::optional<Result<Located>>>();
  GetAsync(client, id, [out](Result<Located> r) { *out = std::move(r); });
  if (!*out) return Status::Internal("Get waits for a restore: use GetAsync with run_io");
  return std::move(**out);
}

void ObjectStore::GetAsync(ClientId client, const ObjectId& id, Done done) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.deleted) {
    return done(Status::NotFound("object " + id.Hex() + " is not in the store"));
  }
  Object& o = it->second;
  if (!o.sealed) return done(Status::NotFound("object " + id.Hex() + " is not sealed yet"));
  if (o.in_memory) return done(PinLocated(client, id, o));
  o.readers.emplace_back(client, std::move(done));
  if (o.restoring) return;  // joins the restore under way
  o.restoring = true;
  waiting_.push_back(Waiting{id, o.size, true, 0, nullptr, o.generation});
  waiting_bytes_ += o.size;
  Pump();
}

void ObjectStore::Unpin(const ObjectId& id, Object& o, ClientId client, uint32_t n) {
  auto p = o.pins.find(client);
  if (p == o.pins.end() || n == 0) return;
  n = std::min(n, p->second);
  p->second -= n;
  if (p->second == 0) o.pins.erase(p);
  o.total_pins -= n;
  auto cp = client_pins_.find(client);
  if (cp != client_pins_.end()) {
    auto e = cp->second.find(id);
    if (e != cp->second.end()) {
      e->second -= std::min(n, e->second);
      if (e->second == 0) cp->second.erase(e);
    }
    if (cp->second.empty()) client_pins_.erase(cp);
  }
}

Status ObjectStore::Release(ClientId client, const ObjectId& id) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.pins.count(client) == 0) {
    return Status::NotFound("object " + id.Hex() +
                            " is not pinned by this client (released twice?)");
  }
  Unpin(id, it->second, client, 1);
  MaybeFree(it);
  return Status::OK();
}

void ObjectStore::Delete(const ObjectId& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.deleted = true;
  MaybeFree(it);
}

void ObjectStore::MaybeFree(std::unordered_map<ObjectId, Object>::iterator it) {
  Object& o = it->second;
  if (!o.deleted || o.total_pins > 0) return;
  auto readers = std::move(o.readers);  // readers waiting for its restore hear that it went
  o.readers.clear();
  for (auto& [c, d] : readers)
    d(Status::NotFound("object " + it->first.Hex() + " was freed while it was restored"));
  if (o.in_memory) alloc_.Free(o.offset);
  if (o.spill_file) ::unlink(SpillPath(it->first).c_str());
  objects_.erase(it);
}

void ObjectStore::ClientGone(ClientId client) {
  // What it waits for is not answered (its connection is gone).
  for (auto w = waiting_.begin(); w != waiting_.end();) {
    if (!w->restore && w->client == client) {
      waiting_bytes_ -= w->size;
      w = waiting_.erase(w);
    } else {
      ++w;
    }
  }
  for (auto& [id, o] : objects_) {
    o.readers.erase(std::remove_if(o.readers.begin(), o.readers.end(),
                                   [client](const auto& r) { return r.first == client; }),
                    o.readers.end());
  }
  auto cp = client_pins_.find(client);
  std::unordered_map<ObjectId, uint32_t> pins;
  if (cp != client_pins_.end()) pins = std::move(cp->second);
  client_pins_.erase(client);
  for (auto& [id, n] : pins) {
    auto it = objects_.find(id);
    if (it == objects_.end()) continue;
    Object& o = it->second;
    auto p = o.pins.find(client);
    if (p != o.pins.end()) {
      o.total_pins -= p->second;
      o.pins.erase(p);
    }
    if (!o.sealed && o.creator == client) o.deleted = true;  // half-written: nobody can use it
    MaybeFree(it);
  }
}

void ObjectStore::OwnerGone(const WorkerId& owner) {
  std::vector<ObjectId> ids;
  for (auto& [id, o] : objects_) {
    if (o.owner == owner) ids.push_back(id);
  }
  for (const auto& id : ids) Delete(id);
}

StoreTableStats ObjectStore::stats() const {
  StoreTableStats s;
  s.capacity = alloc_.capacity();
  s.used = alloc_.used();
  s.num_objects = objects_.size();
  s.spills_total = spills_total_;
  s.restores_total = restores_total_;
  for (const auto& [id, o] : objects_) {
    if (o.in_memory && (o.total_pins > 0 || !o.sealed)) s.pinned += o.size;
    if (o.spill_file) {
      s.spilled += o.size;
      s.num_spilled++;
    }
  }
  return s;
}

void ObjectStore::RemoveSpillFiles() {
  for (auto& [id, o] : objects_) {
    if (o.spill_file) ::unlink(SpillPath(id).c_str());
    o.spill_file = false;
  }
  if (!config_.spill_dir.empty()) ::rmdir(config_.spill_dir.c_str());
}

}  // namespace prism

#include "object_store/object_store.h"

#include "base/logging.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

namespace prism {
namespace {

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::string Bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 20)) return std::to_string(n >> 20) + " MiB";
  if (n >= (uint64_t{1} << 10)) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " bytes";
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
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
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
      return Status::OutOfMemory("cannot pre-fault a " + Bytes(config.capacity) + " object store: only " +
                                 Bytes(available) + " of memory is available");
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
  return std::unique_ptr<ObjectStore>(new ObjectStore(std::move(config), fd, static_cast<uint8_t*>(base)));
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

Result<ObjectStore::Located> ObjectStore::Create(ClientId client, const ObjectId& id,
                                                 uint64_t size, const WorkerId& owner) {
  if (id.IsNil()) return Status::InvalidArgument("object id is nil");
  if (size == 0) return Status::InvalidArgument("an object needs at least one byte");
  if (objects_.count(id) > 0) {
    return Status::AlreadyExists("object " + id.Hex() + " already exists in the object store" +
                                 (objects_[id].sealed ? " (sealed)" : " (being written)"));
  }
  if (size > alloc_.capacity()) {
    return Status::OutOfMemory("object " + id.Hex() + " is " + Bytes(size) +
                               ", larger than the whole object store (" + Bytes(alloc_.capacity()) +
                               "); start prism with a larger --object-store-memory");
  }
  PRISM_ASSIGN_OR_RETURN(uint64_t offset, Allocate(size, id));
  Object& o = objects_[id];
  o.size = size;
  o.offset = offset;
  o.in_memory = true;
  o.creator = client;
  o.owner = owner;
  o.last_use = ++clock_;
  o.pins[client] = 1;
  o.total_pins = 1;
  client_pins_[client][id] += 1;
  return Located{offset, size};
}

Result<uint64_t> ObjectStore::Allocate(uint64_t size, const ObjectId& for_id) {
  if (auto off = alloc_.Allocate(size)) return *off;
  // Spill the least recently used objects nobody pins until the allocation fits.
  std::vector<std::pair<uint64_t, ObjectId>> candidates;
  uint64_t spillable = 0;
  for (auto& [id, o] : objects_) {
    if (o.in_memory && o.sealed && o.total_pins == 0 && !o.deleted) {
      candidates.emplace_back(o.last_use, id);
      spillable += alloc_.BlockSize(o.offset);
    }
  }
  if (alloc_.capacity() - alloc_.used() + spillable < size) {
    // Even spilling everything would not make room: do not spill for nothing.
    StoreTableStats s = stats();
    return Status::OutOfMemory("the object store is full: " + Bytes(size) + " needed for object " +
                               for_id.Hex() + ", " + Bytes(s.pinned) + " of " + Bytes(s.capacity) +
                               " are pinned by writers and readers");
  }
  std::sort(candidates.begin(), candidates.end());
  for (auto& [use, id] : candidates) {
    Object& o = objects_.at(id);
    Status st = Spill(id, o);
    if (!st.ok()) {
      return Status::OutOfMemory("the object store is full and spilling failed: " + st.message());
    }
    if (auto off = alloc_.Allocate(size)) return *off;
  }
  StoreTableStats s = stats();
  return Status::OutOfMemory("the object store is full: " + Bytes(size) + " needed for object " +
                             for_id.Hex() + ", " + Bytes(s.pinned) + " of " + Bytes(s.capacity) +
                             " are pinned by writers and readers, nothing more can be spilled");
}

Status ObjectStore::Spill(const ObjectId& id, Object& o) {
  if (!o.spill_file) {
    std::error_code ec;
    std::filesystem::create_directories(config_.spill_dir, ec);
    std::string path = SpillPath(id);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Status::IOError(Errno(("open " + path).c_str()));
    uint64_t done = 0;
    while (done < o.size) {
      ssize_t n = ::pwrite(fd, base_ + o.offset + done, o.size - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Status st = Status::IOError(Errno(("write " + path).c_str()));
        ::close(fd);
        ::unlink(path.c_str());
        return st;
      }
      done += static_cast<uint64_t>(n);
    }
    ::close(fd);
    o.spill_file = true;
    spills_total_++;
  }
  alloc_.Free(o.offset);
  o.in_memory = false;
  return Status::OK();
}

Status ObjectStore::Restore(const ObjectId& id, Object& o) {
  PRISM_ASSIGN_OR_RETURN(uint64_t offset, Allocate(o.size, id));
  std::string path = SpillPath(id);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  Status st;
  if (fd < 0) {
    st = Status::IOError(Errno(("open " + path).c_str()));
  } else {
    uint64_t done = 0;
    while (done < o.size) {
      ssize_t n = ::pread(fd, base_ + offset + done, o.size - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        st = Status::IOError(n == 0 ? "spill file " + path + " is truncated"
                                    : Errno(("read " + path).c_str()));
        break;
      }
      done += static_cast<uint64_t>(n);
    }
    ::close(fd);
  }
  if (!st.ok()) {
    alloc_.Free(offset);
    return st;
  }
  o.offset = offset;
  o.in_memory = true;
  restores_total_++;
  return Status::OK();
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
  if (o.sealed) return Status::InvalidArgument("object " + id.Hex() + " is sealed: it cannot be aborted");
  if (o.creator != client) {
    return Status::PermissionDenied("object " + id.Hex() + " was created by another client");
  }
  o.deleted = true;
  Unpin(id, o, client, o.pins[client]);
  MaybeFree(it);
  return Status::OK();
}

Result<ObjectStore::Located> ObjectStore::Get(ClientId client, const ObjectId& id) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.deleted) {
    return Status::NotFound("object " + id.Hex() + " is not in the store");
  }
  Object& o = it->second;
  if (!o.sealed) return Status::NotFound("object " + id.Hex() + " is not sealed yet");
  if (!o.in_memory) PRISM_RETURN_IF_ERROR(Restore(id, o));
  o.last_use = ++clock_;
  o.pins[client]++;
  o.total_pins++;
  client_pins_[client][id]++;
  return Located{o.offset, o.size};
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
    return Status::NotFound("object " + id.Hex() + " is not pinned by this client (released twice?)");
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
  if (o.in_memory) alloc_.Free(o.offset);
  if (o.spill_file) ::unlink(SpillPath(it->first).c_str());
  objects_.erase(it);
}

void ObjectStore::ClientGone(ClientId client) {
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

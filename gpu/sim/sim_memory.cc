#include "gpu/sim/sim_memory.h"

#include <fcntl.h>
#include <prism/gpu/profiling.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "base/mutex.h"

namespace prism::gpu::sim {
namespace {
constexpr uint64_t kAlignment = 256;  // cudaMalloc's
constexpr uint8_t kPoison = 0xFF;     // NaN in every float type
}  // namespace

Result<std::unique_ptr<SimMemory>> SimMemory::Create(SimBackend* backend, int device,
                                                     uint64_t capacity) {
  std::unique_ptr<SimMemory> m(new SimMemory(backend, device));
  m->fd_ = memfd_create("prism-sim-gpu", MFD_CLOEXEC);
  if (m->fd_ < 0) return Status::IOError(std::string("memfd_create: ") + std::strerror(errno));
  if (ftruncate(m->fd_, static_cast<off_t>(capacity)) != 0) {
    return Status::IOError(std::string("ftruncate of a sim device arena: ") + std::strerror(errno));
  }
  void* base =
      mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd_, 0);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("mmap of a sim device arena: ") + std::strerror(errno));
  m->base_ = static_cast<uint8_t*>(base);
  m->capacity_ = capacity;
  m->arena_ = ArenaAllocator(capacity, kAlignment);
  return m;
}

SimMemory::~SimMemory() {
  if (base_) munmap(base_, capacity_);
  if (fd_ >= 0) close(fd_);
}

uint64_t SimMemory::bytes_in_use() const {
  MutexLock lock(backend_->mu_);
  return in_use_;
}

std::optional<uint64_t> SimMemory::limit() const {
  MutexLock lock(backend_->mu_);
  return limit_;
}

void SimMemory::set_limit(std::optional<uint64_t> limit) {
  MutexLock lock(backend_->mu_);
  limit_ = limit;
}

void SimMemory::Release(bool all) {
  uint64_t keep = all ? 0 : std::min<uint64_t>(capacity_ / 4, 256ull << 20);
  while (!quarantine_.empty() && quarantine_bytes_ > keep) {
    Quarantined& q = quarantine_.front();
    if (q.stream->Done() < q.seq) {
      if (!all) break;
      q.stream->WaitDone(q.seq);  // its poisoning must not land on a new owner's data
    }
    arena_.Free(q.offset);
    quarantine_bytes_ -= q.bytes;
    quarantine_.pop_front();
  }
}

Result<void*> SimMemory::Allocate(size_t bytes, Stream& stream) {
  NvtxRange range("prism alloc " + std::to_string(bytes) + " bytes");
  auto core = CoreOf(stream);
  if (!core) return Status::InvalidArgument("Allocate: not a stream of the sim backend");
  if (core->device != device_) {
    return Status::InvalidArgument("memory of device " + std::to_string(device_) +
                                   " allocated on stream '" + core->name + "' of device " +
                                   std::to_string(core->device));
  }
  PRISM_RETURN_IF_ERROR(backend_->DeviceStatus(device_));
  MutexLock lock(backend_->mu_);
  uint64_t rounded = (std::max<uint64_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  if (limit_ && in_use_ + rounded > *limit_) {
    return Status::OutOfMemory("out of device memory in this share of device " +
                               std::to_string(device_) + ": asked for " + std::to_string(bytes) +
                               " bytes with " + std::to_string(in_use_) + " of its " +
                               std::to_string(*limit_) + " bytes (gpu_memory) in use");
  }
  auto offset = arena_.Allocate(rounded);
  if (!offset) {
    Release(/*all=*/true);
    offset = arena_.Allocate(rounded);
  }
  if (!offset) {
    return Status::OutOfMemory("device " + std::to_string(device_) +
                               " is out of memory: asked for " + std::to_string(bytes) +
                               " bytes with " + std::to_string(in_use_) + " of " +
                               std::to_string(capacity_) + " in use");
  }
  in_use_ += rounded;
  uint8_t* p = base_ + *offset;
  auto key = reinterpret_cast<uintptr_t>(p);
  // The block is someone else's no longer: forget the frees recorded over it.
  auto& freed = backend_->freed_;
  auto f = freed.lower_bound(key);
  if (f != freed.begin() && std::prev(f)->first + std::prev(f)->second.bytes > key) --f;
  while (f != freed.end() && f->first < key + rounded) f = freed.erase(f);
  SimBackend::Region r;
  r.device = device_;
  r.bytes = bytes;
  r.stream = core->name;
  // The allocation is a point in its stream, as cudaMallocAsync's is: the memory is usable on that
  // stream at once, elsewhere once ordered after this point.
  uint64_t seq = ++core->submitted;
  core->clock[core->id] = seq;
  backend_->Push(core, StreamCore::Op{seq, nullptr, nullptr, 0});
  r.writer = core->id;
  r.write_seq = seq;
  r.writer_name = core->name;
  backend_->regions_[key] = std::move(r);
  return static_cast<void*>(p);
}

Status SimMemory::Deallocate(void* ptr, size_t bytes, Stream& stream) {
  NvtxRange range("prism free " + std::to_string(bytes) + " bytes");
  auto core = CoreOf(stream);
  if (!core) return Status::InvalidArgument("Deallocate: not a stream of the sim backend");
  auto key = reinterpret_cast<uintptr_t>(ptr);
  {
    MutexLock lock(backend_->mu_);
    auto it = backend_->regions_.find(key);
    if (it == backend_->regions_.end() || it->second.imported || it->second.device != device_) {
      auto f = backend_->freed_.find(key);
      if (f != backend_->freed_.end()) {
        return Status::InvalidArgument("double free of device memory at offset " +
                                       std::to_string(key - reinterpret_cast<uintptr_t>(base_)) +
                                       " of device " + std::to_string(device_) +
                                       " (freed on stream '" + f->second.stream + "')");
      }
      return Status::InvalidArgument("Deallocate: the pointer is not an allocation of device " +
                                     std::to_string(device_) + "'s memory");
    }
    if (it->second.bytes != bytes) {
      return Status::InvalidArgument("Deallocate with " + std::to_string(bytes) +
                                     " bytes of an allocation of " +
                                     std::to_string(it->second.bytes));
    }
  }
  uint64_t rounded = (std::max<uint64_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  // Freeing is a write on `stream`: every other stream's use must be ordered before it.
  PRISM_RETURN_IF_ERROR(backend_->Enqueue(core, {{ptr, bytes, true}}, true,
                                          backend_->KernelNs(device_, 0),
                                          [ptr, rounded] { std::memset(ptr, kPoison, rounded); }));
  MutexLock lock(backend_->mu_);
  auto it = backend_->regions_.find(key);
  if (it == backend_->regions_.end())
    return Status::InvalidArgument("double free of device memory");
  backend_->regions_.erase(it);
  backend_->freed_[key] = SimBackend::Freed{rounded, core->name};
  in_use_ -= rounded;
  quarantine_.push_back(
      Quarantined{key - reinterpret_cast<uintptr_t>(base_), rounded, core, core->submitted});
  quarantine_bytes_ += rounded;
  Release(/*all=*/false);
  return Status::OK();
}

bool SimMemory::Owns(const void* ptr, size_t bytes) const {
  MutexLock lock(backend_->mu_);
  auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = backend_->regions_.upper_bound(p);
  if (it == backend_->regions_.begin()) return false;
  --it;
  const SimBackend::Region& r = it->second;
  return !r.imported && r.device == device_ && p + bytes <= it->first + r.bytes;
}

Result<IpcHandle> SimMemory::Export(void* ptr, size_t bytes) {
  MutexLock lock(backend_->mu_);
  auto key = reinterpret_cast<uintptr_t>(ptr);
  auto it = backend_->regions_.find(key);
  if (it == backend_->regions_.end() || it->second.imported || it->second.device != device_ ||
      bytes > it->second.bytes) {
    return Status::InvalidArgument("Export: not (the start of) an allocation of device " +
                                   std::to_string(device_) + " of at least " +
                                   std::to_string(bytes) + " bytes");
  }
  std::ostringstream h;
  h << "sim1 " << getpid() << ' ' << fd_ << ' ' << key - reinterpret_cast<uintptr_t>(base_) << ' '
    << bytes << ' ' << backend_->info(device_).uuid;
  return IpcHandle{h.str()};
}

Result<void*> SimBackend::OpenIpc(const IpcHandle& handle, int device) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(device));
  std::istringstream in(handle.bytes);
  std::string magic, uuid;
  long pid = 0;
  int fd = -1;
  uint64_t offset = 0, bytes = 0;
  if (!(in >> magic >> pid >> fd >> offset >> bytes >> uuid) || magic != "sim1") {
    return Status::InvalidArgument("OpenIpc: not an IPC handle of the sim backend");
  }
  if (uuid != info(device).uuid) {
    return Status::InvalidArgument("OpenIpc: the handle is memory of " + uuid + ", not of device " +
                                   std::to_string(device) + " (" + info(device).uuid + ")");
  }
  if (pid == getpid()) {
    return Status::InvalidArgument(
        "OpenIpc: a handle cannot be opened in the process that exported it");
  }
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  int mine = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (mine < 0) {
    return Status::NotFound("OpenIpc: the exporting process " + std::to_string(pid) +
                            " is gone or its device memory cannot be reached (" +
                            std::strerror(errno) + ")");
  }
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t start = offset / page * page, length = offset - start + std::max<uint64_t>(bytes, 1);
  void* base =
      mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, mine, static_cast<off_t>(start));
  int err = errno;
  close(mine);
  if (base == MAP_FAILED)
    return Status::IOError(std::string("OpenIpc: mmap: ") + std::strerror(err));
  void* ptr = static_cast<uint8_t*>(base) + (offset - start);
  MutexLock lock(mu_);
  Region r;
  r.device = device;
  r.bytes = bytes;
  r.stream = "ipc";
  r.imported = true;
  regions_[reinterpret_cast<uintptr_t>(ptr)] = std::move(r);
  imports_[reinterpret_cast<uintptr_t>(ptr)] = Mapping{base, length};
  return ptr;
}

Status SimBackend::CloseIpc(void* ptr) {
  MutexLock lock(mu_);
  auto key = reinterpret_cast<uintptr_t>(ptr);
  auto it = imports_.find(key);
  if (it == imports_.end())
    return Status::InvalidArgument("CloseIpc: not a pointer OpenIpc returned");
  munmap(it->second.base, it->second.length);
  imports_.erase(it);
  regions_.erase(key);
  return Status::OK();
}

}  // namespace prism::gpu::sim

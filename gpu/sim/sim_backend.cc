#include "gpu/sim/sim_backend.h"

#include <fcntl.h>
#include <prism/gpu/profiling.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <sstream>

#include "base/mutex.h"
#include "gpu/sim/sim_kernels.h"
#include "gpu/sim/sim_memory.h"

namespace prism::gpu::sim {
namespace {

std::string Hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, reinterpret_cast<uintptr_t>(p));
  return buf;
}

Result<uint64_t> ParseBytes(const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  std::string unit = end ? std::string(end) : "";
  double scale = unit.empty()  ? 1
                 : unit == "K" ? 1024.0
                 : unit == "M" ? 1048576.0
                 : unit == "G" ? 1073741824.0
                               : -1;
  if (end == text.c_str() || scale < 0 || !(v > 0)) {
    return Status::InvalidArgument("not a size in bytes: '" + text + "' (e.g. 512M, 2G)");
  }
  return static_cast<uint64_t>(v * scale);
}

}  // namespace

void Merge(VectorClock& into, const VectorClock& from) {
  for (const auto& [k, v] : from) {
    uint64_t& x = into[k];
    x = std::max(x, v);
  }
}

Status ApplySimEnv(SimOptions& options) {
  if (const char* m = std::getenv("PRISM_SIM_DEVICE_MEMORY"); m && *m) {
    PRISM_ASSIGN_OR_RETURN(options.device_memory, ParseBytes(m));
  }
  if (const char* j = std::getenv("PRISM_SIM_JITTER_US"); j && *j) {
    options.jitter_us = std::max(0, std::atoi(j));
  }
  return Status::OK();
}

uint64_t StreamCore::Done() {
  MutexLock lock(mu);
  return done;
}

void StreamCore::WaitDone(uint64_t seq) {
  UniqueLock lock(mu);
  cv.wait(lock, [&]() PRISM_REQUIRES(mu) { return done >= seq; });
}

std::vector<int> ParseVisibleDevices(const std::optional<std::string>& visible,
                                     const std::vector<std::string>& uuids) {
  std::vector<int> out;
  if (!visible) {
    for (size_t i = 0; i < uuids.size(); ++i) out.push_back(static_cast<int>(i));
    return out;
  }
  std::stringstream in(*visible);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    int found = -1;
    if (!item.empty() && std::all_of(item.begin(), item.end(), ::isdigit)) {
      long v = std::strtol(item.c_str(), nullptr, 10);
      if (v < static_cast<long>(uuids.size())) found = static_cast<int>(v);
    } else if (item.rfind("GPU-", 0) == 0 && item.size() > 4) {
      int matches = 0;
      for (size_t i = 0; i < uuids.size(); ++i) {
        if (uuids[i].rfind(item, 0) == 0) {
          found = static_cast<int>(i);
          ++matches;
        }
      }
      if (matches != 1) found = -1;  // an ambiguous prefix is invalid too
    }
    // CUDA stops at the first invalid or repeated entry.
    if (found < 0 || std::find(out.begin(), out.end(), found) != out.end()) break;
    out.push_back(found);
  }
  return out;
}

// ---- streams ----

class SimStream final : public Stream {
 public:
  SimStream(SimBackend* backend, std::shared_ptr<StreamCore> core)
      : backend_(backend), core_(std::move(core)) {}
  ~SimStream() override {
    {
      MutexLock lock(core_->mu);
      core_->stop = true;
    }
    core_->cv.notify_all();
    core_->thread.join();  // after its queue drains, as cudaStreamDestroy lets work finish
  }
  int device() const override { return core_->device; }
  const std::string& name() const override { return core_->name; }
  Status Wait(Event& event) override;
  Status Synchronize() override {
    auto [target, clock] = Snapshot();
    core_->WaitDone(target);
    backend_->HostSynchronized(clock);
    return backend_->DeviceStatus(core_->device);
  }
  Result<bool> Query() override {
    PRISM_RETURN_IF_ERROR(backend_->DeviceStatus(core_->device));
    auto [target, clock] = Snapshot();
    if (core_->Done() < target) return false;
    backend_->HostSynchronized(clock);
    return true;
  }
  Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    NvtxRange range("prism copy " + std::to_string(bytes) + " bytes on '" + core_->name + "'");
    if (bytes > 0 && (!dst || !src)) return Status::InvalidArgument("CopyAsync of a null pointer");
    return backend_->Enqueue(core_, {{src, bytes, false}, {dst, bytes, true}}, false,
                             backend_->CopyNs(dst, src, bytes),
                             [=] { std::memmove(dst, src, bytes); });
  }
  Status MemsetAsync(void* dst, int value, size_t bytes) override {
    if (bytes > 0 && !dst) return Status::InvalidArgument("MemsetAsync of a null pointer");
    return backend_->Enqueue(core_, {{dst, bytes, true}}, true,
                             backend_->KernelNs(core_->device, bytes),
                             [=] { std::memset(dst, value, bytes); });
  }
  void* native() override { return nullptr; }
  const std::shared_ptr<StreamCore>& core() const { return core_; }

 private:
  std::pair<uint64_t, VectorClock> Snapshot() {
    MutexLock lock(backend_->mu());
    return {core_->submitted, core_->clock};
  }
  SimBackend* backend_;
  std::shared_ptr<StreamCore> core_;
};

std::shared_ptr<StreamCore> CoreOf(Stream& stream) {
  auto* s = dynamic_cast<SimStream*>(&stream);
  return s ? s->core() : nullptr;
}

// ---- events ----

class SimEvent final : public Event {
 public:
  SimEvent(SimBackend* backend, int device, bool timing, int ipc_slot = -1)
      : backend_(backend), device_(device), timing_(timing), ipc_slot_(ipc_slot) {}
  ~SimEvent() override {
    if (ipc_slot_ >= 0) backend_->ReleaseIpcSlot(ipc_slot_);
  }
  int device() const override { return device_; }
  Result<IpcEventHandle> Export() override {
    if (ipc_slot_ < 0)
      return Status::InvalidArgument("Export: only events from CreateIpcEvent can be shared");
    std::ostringstream h;
    h << "simev1 " << getpid() << ' ' << backend_->ipc_fd() << ' ' << ipc_slot_ << ' '
      << backend_->info(device_).uuid;
    return IpcEventHandle{h.str()};
  }

  Status Record(Stream& stream) override {
    auto core = CoreOf(stream);
    if (!core) return Status::InvalidArgument("Event::Record: not a stream of the sim backend");
    if (core->device != device_) {
      return Status::InvalidArgument("an event of device " + std::to_string(device_) +
                                     " cannot be recorded on stream '" + core->name +
                                     "' of device " + std::to_string(core->device));
    }
    PRISM_RETURN_IF_ERROR(backend_->DeviceStatus(device_));
    {
      MutexLock lock(mu_);
      MutexLock backend_lock(backend_->mu());
      stream_ = core;
      seq_ = core->submitted;
      clock_ = core->clock;
      vtime_ns_ = core->vtime_ns;
      recorded_ = true;
    }
    if (ipc_slot_ < 0) return Status::OK();
    // Shared: other processes see a new generation recorded now, completed once the stream
    // gets here.
    SimBackend::IpcSlot* slot = backend_->ipc_slot(ipc_slot_);
    uint64_t generation = slot->recorded.load() + 1;
    PRISM_RETURN_IF_ERROR(backend_->Enqueue(core, {}, false, 0, [slot, generation] {
      uint64_t seen = slot->completed.load();
      while (seen < generation && !slot->completed.compare_exchange_weak(seen, generation)) {
      }
    }));
    slot->recorded.store(generation);  // only once its completion is on its way
    return Status::OK();
  }
  Result<bool> Query() override {
    PRISM_RETURN_IF_ERROR(backend_->DeviceStatus(device_));
    auto c = Capture();
    if (!c.stream) return true;  // never recorded: complete, as CUDA says
    if (c.stream->Done() < c.seq) return false;
    backend_->HostSynchronized(c.clock);
    return true;
  }
  Status Synchronize() override {
    auto c = Capture();
    if (c.stream) {
      c.stream->WaitDone(c.seq);
      backend_->HostSynchronized(c.clock);
    }
    return backend_->DeviceStatus(device_);
  }
  Result<double> ElapsedSince(Event& start_event) override {
    auto* start = dynamic_cast<SimEvent*>(&start_event);
    if (!start) return Status::InvalidArgument("ElapsedSince: not an event of the sim backend");
    if (!timing_ || !start->timing_) {
      return Status::InvalidArgument("ElapsedSince needs two events created with timing");
    }
    auto a = start->Capture(), b = Capture();
    if (!a.stream || !b.stream)
      return Status::InvalidArgument("ElapsedSince: an event was never recorded");
    if (a.stream->Done() < a.seq || b.stream->Done() < b.seq) {
      return Status::Unavailable("ElapsedSince: an event's work is not complete yet");
    }
    return (b.vtime_ns - a.vtime_ns) / 1e6;
  }

  struct Captured {
    std::shared_ptr<StreamCore> stream;
    uint64_t seq = 0;
    VectorClock clock;
    double vtime_ns = 0;
  };
  Captured Capture() {
    MutexLock lock(mu_);
    if (!recorded_) return {};
    return {stream_, seq_, clock_, vtime_ns_};
  }

 private:
  SimBackend* backend_;
  int device_;
  bool timing_;
  int ipc_slot_;  // a shared event's slot in the event page; -1 for a local one
  Mutex mu_;
  std::shared_ptr<StreamCore> stream_ PRISM_GUARDED_BY(mu_);
  uint64_t seq_ PRISM_GUARDED_BY(mu_) = 0;
  VectorClock clock_ PRISM_GUARDED_BY(mu_);
  double vtime_ns_ PRISM_GUARDED_BY(mu_) = 0;
  bool recorded_ PRISM_GUARDED_BY(mu_) = false;
};

// Another process's shared event: its slot in that process's event page, mapped here.
class SimImportedEvent final : public Event {
 public:
  SimImportedEvent(int device, void* map, size_t length, SimBackend::IpcSlot* slot)
      : device_(device), map_(map, [length](void* p) { munmap(p, length); }), slot_(slot) {}
  int device() const override { return device_; }
  Status Record(Stream&) override {
    return Status::InvalidArgument("an event opened from another process cannot be recorded here");
  }
  Result<bool> Query() override { return slot_->completed.load() >= slot_->recorded.load(); }
  Status Synchronize() override {
    uint64_t target = slot_->recorded.load();
    while (slot_->completed.load() < target)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    return Status::OK();
  }
  Result<double> ElapsedSince(Event&) override {
    return Status::InvalidArgument("ElapsedSince: shared events do not time");
  }
  Result<IpcEventHandle> Export() override {
    return Status::InvalidArgument("Export: this event belongs to another process");
  }
  SimBackend::IpcSlot* slot() const { return slot_; }
  /// The mapping, for work that waits on it after this event object is gone.
  const std::shared_ptr<void>& mapping() const { return map_; }

 private:
  int device_;
  std::shared_ptr<void> map_;
  SimBackend::IpcSlot* slot_;
};

Status SimStream::Wait(Event& event) {
  if (auto* imported = dynamic_cast<SimImportedEvent*>(&event)) {
    // The exporter's latest record as of now; the stream's thread waits for its completion.
    SimBackend::IpcSlot* slot = imported->slot();
    uint64_t target = slot->recorded.load();
    return backend_->Enqueue(core_, {}, false, 0, [slot, target, keep = imported->mapping()] {
      while (slot->completed.load() < target)
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    });
  }
  auto* e = dynamic_cast<SimEvent*>(&event);
  if (!e) return Status::InvalidArgument("Stream::Wait: not an event of the sim backend");
  PRISM_RETURN_IF_ERROR(backend_->DeviceStatus(core_->device));
  auto c = e->Capture();
  if (!c.stream) return Status::OK();  // never recorded: nothing to wait for
  return backend_->EnqueueWait(core_, c.stream, c.seq, c.clock, c.vtime_ns);
}

// ---- the backend ----

SimBackend::SimBackend(SimOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<SimBackend>> SimBackend::Create(SimOptions options) {
  if (options.device_memory < (1u << 20)) {
    return Status::InvalidArgument("sim device memory must be at least 1 MiB");
  }
  std::unique_ptr<SimBackend> b(new SimBackend(std::move(options)));
  const Topology& topo = b->options_.topology;
  std::vector<std::string> uuids;
  for (const TopologyGpu& g : topo.gpus()) uuids.push_back(g.uuid);
  std::vector<int> visible = ParseVisibleDevices(b->options_.visible, uuids);
  for (size_t i = 0; i < visible.size(); ++i) {
    auto d = std::make_unique<Device>();
    const TopologyGpu& g = topo.gpus()[visible[i]];
    d->physical = visible[i];
    d->info.ordinal = static_cast<int>(i);
    d->info.uuid = g.uuid;
    d->info.name = g.name + " (sim)";
    d->info.total_memory = std::min(g.memory_bytes, b->options_.device_memory);
    d->info.pci_bus_id = g.pci_bus_id;
    b->devices_.push_back(std::move(d));
  }
  b->kernels_ = std::make_unique<SimKernels>(b.get());
  b->rng_ = b->options_.seed;
  return b;
}

SimBackend::~SimBackend() {
  if (ipc_page_) munmap(ipc_page_, sizeof(IpcSlot) * kIpcSlots);
  if (ipc_fd_ >= 0) close(ipc_fd_);
}

Result<DeviceInfo> SimBackend::device(int ordinal) const {
  if (ordinal < 0 || ordinal >= device_count()) {
    return Status::InvalidArgument("no device " + std::to_string(ordinal) + ": this process sees " +
                                   std::to_string(device_count()));
  }
  return devices_[ordinal]->info;
}

Status SimBackend::DeviceStatus(int device) {
  if (device < 0 || device >= device_count()) {
    return Status::InvalidArgument("no device " + std::to_string(device) + ": this process sees " +
                                   std::to_string(device_count()));
  }
  Device& d = *devices_[device];
  if (!d.faulted.load()) return Status::OK();
  MutexLock lock(d.fault_mu);
  return Status::Internal(d.fault);
}

void SimBackend::Fault(int device, const std::string& what) {
  Device& d = *devices_[device];
  MutexLock lock(d.fault_mu);
  if (d.faulted.load()) return;  // the first fault is the one reported
  d.fault = "device " + std::to_string(device) + " (" + d.info.uuid + ") faulted: " + what +
            "; as with CUDA, the device is unusable in this process until it exits";
  d.faulted = true;
}

Result<std::unique_ptr<Stream>> SimBackend::CreateStream(int device, std::string name) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(device));
  auto core = std::make_shared<StreamCore>();
  {
    MutexLock lock(mu_);
    core->id = next_stream_id_++;
  }
  core->device = device;
  core->name = name.empty() ? "stream " + std::to_string(core->id) : std::move(name);
  core->thread = std::thread([this, core] { RunStream(core); });
  return std::unique_ptr<Stream>(new SimStream(this, std::move(core)));
}

Result<std::unique_ptr<Event>> SimBackend::CreateEvent(int device, bool timing) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(device));
  return std::unique_ptr<Event>(new SimEvent(this, device, timing));
}

Result<int> SimBackend::AcquireIpcSlot() {
  MutexLock lock(mu_);
  if (ipc_fd_ < 0) {
    size_t bytes = sizeof(IpcSlot) * kIpcSlots;
    int fd = memfd_create("prism-sim-events", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      if (fd >= 0) close(fd);
      return Status::IOError(std::string("sim event page: ") + std::strerror(errno));
    }
    void* page = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) {
      close(fd);
      return Status::IOError(std::string("sim event page: ") + std::strerror(errno));
    }
    ipc_fd_ = fd;
    ipc_page_ = static_cast<IpcSlot*>(page);  // zero-filled: every counter starts at 0
  }
  int slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else if (next_slot_ < kIpcSlots) {
    slot = next_slot_++;
  } else {
    return Status::OutOfMemory("more than " + std::to_string(kIpcSlots) +
                               " shared events in this process");
  }
  // A reused slot starts where its last user left it (importers compare the two counters).
  ipc_page_[slot].completed.store(ipc_page_[slot].recorded.load());
  return slot;
}

void SimBackend::ReleaseIpcSlot(int slot) {
  MutexLock lock(mu_);
  free_slots_.push_back(slot);
}

Result<std::unique_ptr<Event>> SimBackend::CreateIpcEvent(int device) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(device));
  PRISM_ASSIGN_OR_RETURN(int slot, AcquireIpcSlot());
  return std::unique_ptr<Event>(new SimEvent(this, device, false, slot));
}

Result<std::unique_ptr<Event>> SimBackend::OpenIpcEvent(const IpcEventHandle& handle) {
  std::istringstream in(handle.bytes);
  std::string magic, uuid;
  long pid = 0;
  int fd = -1, slot = -1;
  if (!(in >> magic >> pid >> fd >> slot >> uuid) || magic != "simev1" || slot < 0 ||
      slot >= kIpcSlots) {
    return Status::InvalidArgument("OpenIpcEvent: not an event handle of the sim backend");
  }
  if (pid == getpid())
    return Status::InvalidArgument("OpenIpcEvent: the event is this process's own");
  int device = 0;
  for (const auto& d : devices_) {
    if (d->info.uuid == uuid) device = d->info.ordinal;
  }
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  int mine = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (mine < 0) {
    return Status::NotFound("OpenIpcEvent: the exporting process " + std::to_string(pid) +
                            " is gone (" + std::strerror(errno) + ")");
  }
  size_t bytes = sizeof(IpcSlot) * kIpcSlots;
  void* page = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mine, 0);
  close(mine);
  if (page == MAP_FAILED)
    return Status::IOError(std::string("OpenIpcEvent: mmap: ") + std::strerror(errno));
  return std::unique_ptr<Event>(
      new SimImportedEvent(device, page, bytes, static_cast<IpcSlot*>(page) + slot));
}

void SimBackend::RunStream(std::shared_ptr<StreamCore> s) {
  std::minstd_rand rng(static_cast<uint32_t>(options_.seed * 7919 + s->id));
  std::uniform_int_distribution<int> delay(0, std::max(0, options_.jitter_us));
  for (;;) {
    StreamCore::Op op;
    {
      UniqueLock lock(s->mu);
      s->cv.wait(lock, [&]() PRISM_REQUIRES(s->mu) { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) return;
      op = std::move(s->queue.front());
      s->queue.pop_front();
    }
    if (options_.jitter_us > 0 && (rng() & 1)) {
      std::this_thread::sleep_for(std::chrono::microseconds(delay(rng)));
    }
    if (op.wait_for) {
      op.wait_for->WaitDone(op.wait_seq);
    } else if (op.run && !devices_[s->device]->faulted.load()) {
      op.run();
    }
    {
      MutexLock lock(s->mu);
      s->done = op.seq;
    }
    s->cv.notify_all();
  }
}

void SimBackend::Push(const std::shared_ptr<StreamCore>& s, StreamCore::Op op) {
  {
    MutexLock lock(s->mu);
    s->queue.push_back(std::move(op));
  }
  s->cv.notify_all();
}

Status SimBackend::CheckAccess(StreamCore& s, uint64_t seq, const Access& a, bool device_only) {
  if (a.bytes == 0) return Status::OK();
  auto p = reinterpret_cast<uintptr_t>(a.ptr);
  auto it = regions_.upper_bound(p);
  if (it != regions_.begin()) {
    --it;
    Region& r = it->second;
    if (p < it->first + r.bytes) {
      if (p + a.bytes > it->first + r.bytes) {
        Fault(s.device, "illegal address: " + std::to_string(a.bytes) + " bytes at " + Hex(a.ptr) +
                            " run past the end of a " + std::to_string(r.bytes) +
                            "-byte allocation");
        return DeviceStatus(s.device);
      }
      if (r.device != s.device && !CanAccessPeer(r.device, s.device) && device_only) {
        return Status::InvalidArgument("stream '" + s.name + "' of device " +
                                       std::to_string(s.device) +
                                       " cannot access memory of device " +
                                       std::to_string(r.device) + " (no peer access between them)");
      }
      auto unordered = [&](uint64_t stream, uint64_t at) {
        if (stream == 0 || at == 0 || stream == s.id) return false;
        auto known = s.clock.find(stream);
        return known == s.clock.end() || known->second < at;
      };
      auto race = [&](const std::string& other, const char* their) {
        return Status::InvalidArgument(
            "race on device memory " + Hex(a.ptr) + " (" + std::to_string(a.bytes) +
            " bytes): stream '" + s.name + "' " + (a.write ? "writes" : "reads") +
            " it while the " + their + " on stream '" + other +
            "' is not ordered before (record an event there and wait on it, "
            "or synchronize)");
      };
      if (unordered(r.writer, r.write_seq)) return race(r.writer_name, "write");
      if (a.write) {
        for (const auto& [reader, at] : r.readers) {
          if (unordered(reader, at.first)) return race(at.second, "read");
        }
      }
      return Status::OK();
    }
  }
  auto f = freed_.upper_bound(p);
  if (f != freed_.begin()) {
    --f;
    if (p < f->first + f->second.bytes) {
      Fault(s.device, "illegal address: " + Hex(a.ptr) + " is in a " +
                          std::to_string(f->second.bytes) + "-byte allocation freed on stream '" +
                          f->second.stream + "' (use after free)");
      return DeviceStatus(s.device);
    }
  }
  for (const auto& d : devices_) {
    if (d->memory && d->memory->Contains(a.ptr)) {
      Fault(s.device, "illegal address: " + Hex(a.ptr) + " is device memory that is not allocated");
      return DeviceStatus(s.device);
    }
  }
  if (device_only) {
    return Status::InvalidArgument("a kernel on stream '" + s.name + "' was given host memory " +
                                   Hex(a.ptr) + " (kernels take device memory)");
  }
  return Status::OK();
}

Status SimBackend::Enqueue(const std::shared_ptr<StreamCore>& s,
                           const std::vector<Access>& accesses, bool device_only,
                           double duration_ns, std::function<void()> run) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(s->device));
  MutexLock lock(mu_);
  Merge(s->clock, host_clock_);
  uint64_t seq = s->submitted + 1;
  for (const Access& a : accesses) PRISM_RETURN_IF_ERROR(CheckAccess(*s, seq, a, device_only));
  // All checks passed: record the accesses.
  for (const Access& a : accesses) {
    if (a.bytes == 0) continue;
    auto p = reinterpret_cast<uintptr_t>(a.ptr);
    auto it = regions_.upper_bound(p);
    if (it == regions_.begin()) continue;
    --it;
    if (p >= it->first + it->second.bytes) continue;
    Region& r = it->second;
    if (a.write) {
      r.writer = s->id;
      r.write_seq = seq;
      r.writer_name = s->name;
      r.readers.clear();
    } else {
      r.readers[s->id] = {seq, s->name};
    }
  }
  s->submitted = seq;
  s->clock[s->id] = seq;
  s->vtime_ns += duration_ns;
  Push(s, StreamCore::Op{seq, std::move(run), nullptr, 0});
  return Status::OK();
}

Status SimBackend::EnqueueWait(const std::shared_ptr<StreamCore>& s,
                               const std::shared_ptr<StreamCore>& on, uint64_t seq,
                               const VectorClock& clock, double vtime_ns) {
  MutexLock lock(mu_);
  Merge(s->clock, host_clock_);
  Merge(s->clock, clock);
  s->vtime_ns = std::max(s->vtime_ns, vtime_ns);
  uint64_t my_seq = ++s->submitted;
  s->clock[s->id] = my_seq;
  Push(s, StreamCore::Op{my_seq, nullptr, on, seq});
  return Status::OK();
}

void SimBackend::HostSynchronized(const VectorClock& clock) {
  MutexLock lock(mu_);
  Merge(host_clock_, clock);
}

int SimBackend::PointerDevice(const void* ptr) const {
  MutexLock lock(mu_);
  auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = regions_.upper_bound(p);
  if (it != regions_.begin()) {
    --it;
    if (p < it->first + it->second.bytes) return it->second.device;
  }
  for (const auto& d : devices_) {
    if (d->memory && d->memory->Contains(ptr)) return d->info.ordinal;
  }
  return -1;
}

bool SimBackend::CanAccessPeer(int device, int peer) const {
  if (device < 0 || peer < 0 || device >= device_count() || peer >= device_count()) return false;
  if (device == peer) return true;
  return options_.topology.Path(devices_[device]->physical, devices_[peer]->physical) !=
         PathKind::kSys;
}

double SimBackend::CopyNs(const void* dst, const void* src, size_t bytes) const {
  constexpr double kLatencyNs = 2000;
  int a = PointerDevice(src), b = PointerDevice(dst);
  const Topology& t = options_.topology;
  double gbps;  // GB/s is bytes per ns
  if (a < 0 && b < 0)
    gbps = 20;
  else if (a < 0 || b < 0)
    gbps = t.pcie_gbps();
  else if (a == b)
    return kLatencyNs + 2.0 * bytes / t.Bandwidth(physical(a), physical(a));
  else
    gbps = t.Bandwidth(physical(a), physical(b));
  return kLatencyNs + bytes / gbps;
}

double SimBackend::KernelNs(int device, size_t bytes_touched, double flops) const {
  constexpr double kLaunchNs = 3000, kFlopsPerNs = 5e4;  // 50 TFLOP/s
  double hbm = options_.topology.Bandwidth(physical(device), physical(device));
  return kLaunchNs + bytes_touched / hbm + flops / kFlopsPerNs;
}

Result<MemoryResource*> SimBackend::memory(int device) {
  PRISM_RETURN_IF_ERROR(DeviceStatus(device));
  MutexLock lock(mu_);
  Device& d = *devices_[device];
  if (!d.memory) {
    PRISM_ASSIGN_OR_RETURN(d.memory, SimMemory::Create(this, device, d.info.total_memory));
  }
  return static_cast<MemoryResource*>(d.memory.get());
}

}  // namespace prism::gpu::sim

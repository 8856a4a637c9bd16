// The sim backend: N simulated devices on the host, built to find the bugs real GPUs would.
//  - a thread per stream, with random delays before each piece of work (jitter), so unordered
//    work really races;
//  - device memory from a memfd arena per device; freed memory is poisoned (0xFF: NaN in floats)
//    and kept out of reuse for a while, and touching it is a sticky illegal-address fault;
//  - a buffer used on a stream that is not ordered (by an event or a host sync) after another
//    stream's last use is reported as an error: a vector clock per stream, as race detectors do;
//  - CUDA's semantics for events never recorded, sticky errors after a fault, and per-process
//    renumbering through CUDA_VISIBLE_DEVICES (indices or UUIDs);
//  - a virtual clock: copies and kernels advance it by the bytes over the modelled bandwidth of
//    their path (topology profile), and timing events read it. Nothing sleeps to model time.
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/topology.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "base/mutex.h"
#include "base/thread_annotations.h"

namespace prism::gpu::sim {

struct SimOptions {
  Topology topology;
  /// CUDA_VISIBLE_DEVICES; nullopt when unset (all devices visible).
  std::optional<std::string> visible;
  /// Real host bytes behind each device (its total_memory), at most the profile's memory.
  uint64_t device_memory = 1ull << 30;
  /// Up to this many microseconds of random delay before a stream runs each piece of work.
  int jitter_us = 20;
  uint64_t seed = 0;
};

/// The options $PRISM_SIM_DEVICE_MEMORY (bytes, K/M/G suffixes) and $PRISM_SIM_JITTER_US set.
Status ApplySimEnv(SimOptions& options);

using VectorClock = std::map<uint64_t, uint64_t>;  // stream id -> last op known done before
void Merge(VectorClock& into, const VectorClock& from);

class SimBackend;
class SimMemory;

// What a stream shares with its events and its thread. Enqueue-side fields are guarded by the
// backend's mutex; execution-side fields by `mu`.
struct StreamCore {
  uint64_t id = 0;
  int device = 0;  // local ordinal
  std::string name;
  // Enqueue side (SimBackend::mu_).
  uint64_t submitted = 0;
  VectorClock clock;
  double vtime_ns = 0;
  // Execution side.
  struct Op {
    uint64_t seq;
    std::function<void()> run;  // null for a wait
    std::shared_ptr<StreamCore> wait_for;
    uint64_t wait_seq = 0;
  };
  Mutex mu;
  std::condition_variable cv;
  std::deque<Op> queue PRISM_GUARDED_BY(mu);
  uint64_t done PRISM_GUARDED_BY(mu) = 0;
  bool stop PRISM_GUARDED_BY(mu) = false;
  std::thread thread;

  uint64_t Done();
  void WaitDone(uint64_t seq);
};

class SimBackend final : public Backend {
 public:
  static Result<std::unique_ptr<SimBackend>> Create(SimOptions options);
  ~SimBackend() override;

  std::string_view name() const override { return "sim"; }
  int device_count() const override { return static_cast<int>(devices_.size()); }
  Result<DeviceInfo> device(int ordinal) const override;
  Result<std::unique_ptr<Stream>> CreateStream(int device, std::string name) override;
  Result<std::unique_ptr<Event>> CreateEvent(int device, bool timing = false) override;
  Result<std::unique_ptr<Event>> CreateIpcEvent(int device) override;
  Result<std::unique_ptr<Event>> OpenIpcEvent(const IpcEventHandle& handle) override;
  Result<MemoryResource*> memory(int device) override;
  Result<void*> OpenIpc(const IpcHandle& handle, int device) override;
  Status CloseIpc(void* ptr) override;
  Status DeviceStatus(int device) override;
  Kernels& kernels() override { return *kernels_; }
  bool CanAccessPeer(int device, int peer) const override;
  int PointerDevice(const void* ptr) const override;

  // For the sim's streams, events, memory and kernels.
  struct Access {
    const void* ptr;
    size_t bytes;
    bool write;
  };
  /// Checks and records `accesses` by the next op of `s`, then queues `run` with a modelled
  /// duration. `device_only`: every pointer must be device memory (a kernel's arguments).
  Status Enqueue(const std::shared_ptr<StreamCore>& s, const std::vector<Access>& accesses,
                 bool device_only, double duration_ns, std::function<void()> run);
  Status EnqueueWait(const std::shared_ptr<StreamCore>& s, const std::shared_ptr<StreamCore>& on,
                     uint64_t seq, const VectorClock& clock, double vtime_ns);
  /// The modelled time of moving `bytes` from src to dst.
  double CopyNs(const void* dst, const void* src, size_t bytes) const;
  double KernelNs(int device, size_t bytes_touched, double flops = 0) const;
  /// Marks `device` faulted (sticky) with `what`.
  void Fault(int device, const std::string& what);
  void HostSynchronized(const VectorClock& clock);
  Mutex& mu() { return mu_; }
  const DeviceInfo& info(int device) const { return devices_[device]->info; }
  int physical(int device) const { return devices_[device]->physical; }

  // Memory bookkeeping (SimMemory calls these under mu_).
  struct Region {  // a live allocation or an imported mapping
    int device;
    size_t bytes;
    std::string stream;  // where it was allocated (or "ipc")
    uint64_t writer = 0, write_seq = 0;
    std::string writer_name;
    std::map<uint64_t, std::pair<uint64_t, std::string>> readers;  // stream -> (seq, name)
    bool imported = false;
  };
  std::map<uintptr_t, Region>& regions() PRISM_REQUIRES(mu_) { return regions_; }
  struct Freed {
    size_t bytes;
    std::string stream;
  };
  std::map<uintptr_t, Freed>& freed() PRISM_REQUIRES(mu_) { return freed_; }

 private:
  struct Device {
    DeviceInfo info;
    int physical = 0;
    std::atomic<bool> faulted{false};
    std::string fault PRISM_GUARDED_BY(fault_mu);
    Mutex fault_mu;
    std::unique_ptr<SimMemory> memory;  // created on first use
  };
  explicit SimBackend(SimOptions options);
  Status CheckAccess(StreamCore& s, uint64_t seq, const Access& a, bool device_only)
      PRISM_REQUIRES(mu_);
  void Push(const std::shared_ptr<StreamCore>& s, StreamCore::Op op);
  void RunStream(std::shared_ptr<StreamCore> s);

  SimOptions options_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::unique_ptr<Kernels> kernels_;
  mutable Mutex mu_;
  uint64_t next_stream_id_ PRISM_GUARDED_BY(mu_) = 1;
  VectorClock host_clock_ PRISM_GUARDED_BY(mu_);
  std::map<uintptr_t, Region> regions_ PRISM_GUARDED_BY(mu_);
  std::map<uintptr_t, Freed> freed_ PRISM_GUARDED_BY(mu_);
  struct Mapping {
    void* base;
    size_t length;
  };
  std::map<uintptr_t, Mapping> imports_ PRISM_GUARDED_BY(mu_);  // OpenIpc's mappings

 public:
  // Events shared between processes: slots in a memfd page of this process, {recorded,
  // completed} generation counters each.
  struct IpcSlot {
    std::atomic<uint64_t> recorded;
    std::atomic<uint64_t> completed;
  };
  static constexpr int kIpcSlots = 4096;
  Result<int> AcquireIpcSlot();
  void ReleaseIpcSlot(int slot);
  IpcSlot* ipc_slot(int slot) { return &ipc_page_[slot]; }
  int ipc_fd() {
    MutexLock lock(mu_);
    return ipc_fd_;
  }

 private:
  int ipc_fd_ PRISM_GUARDED_BY(mu_) = -1;
  IpcSlot* ipc_page_ = nullptr;
  std::vector<int> free_slots_ PRISM_GUARDED_BY(mu_);
  int next_slot_ PRISM_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> rng_{0};

  friend class SimStream;
  friend class SimMemory;
};

/// The shared core of a sim stream; null for a stream of another backend.
std::shared_ptr<StreamCore> CoreOf(Stream& stream);

/// Parses CUDA_VISIBLE_DEVICES against `uuids` (physical order) as CUDA does: a list of indices
/// or UUID prefixes, cut at the first entry that is invalid or repeated; nullopt = all.
std::vector<int> ParseVisibleDevices(const std::optional<std::string>& visible,
                                     const std::vector<std::string>& uuids);

}  // namespace prism::gpu::sim

// A worker's GPU side: its device backend (created when a task first needs it), a pool of named
// streams per device, and the context of each running GPU task (gpu::CurrentContext()).
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/context.h>
#include <prism/gpu/tensor.h>
#include <prism/ids.h>
#include <prism/internal/runtime_api.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/thread_annotations.h"
#include "object_store/store_client.h"
#include "worker/device_transfer.h"
#include "worker/spilling_memory.h"

namespace prism {

class GpuTasks {
 public:
  static constexpr int kStreamsPerDevice = 4;

  GpuTasks();
  ~GpuTasks();

  /// The topology profile this process's sim devices follow, when it is not $PRISM_GPU_TOPOLOGY
  /// (a driver given InitOptions::gpu_topology). Before the backend is first used.
  void SetTopology(std::string spec) {
    MutexLock lock(mu_);
    topology_ = std::move(spec);
  }

  /// Sets the calling thread's context for a task holding `gpus` (the daemon's instance indices;
  /// this process sees them as devices 0..k-1) with `gpu_memory` bytes (0: no cap). A task without
  /// GPUs gets none. The backend is created on first use; its failure is reported when the task
  /// asks for its context.
  void Enter(const std::vector<int>& gpus, uint64_t gpu_memory);
  /// Clears the calling thread's context (actors keep theirs: `keep`).
  void Leave(bool keep);
  /// The calling thread's context; throws RuntimeError as gpu::CurrentContext() documents.
  gpu::Context& Current();
  /// The calling thread's context, or null.
  gpu::Context* CurrentOrNull();

  /// Device objects (gpu/tensor.h's internal::PackTensor and UnpackTensor).
  std::string PackTensor(const gpu::Tensor& tensor);
  gpu::Tensor UnpackTensor(std::string_view descriptor);
  /// This process's backend (created on first use), or the reason there is none.
  Result<gpu::Backend*> backend();
  /// Where a tensor made outside a GPU task (a driver taking a framework's tensor in) lives:
  /// `device`'s memory (spilling like a task's) and a stream of this process for it.
  Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> OutsideTasks(int device);
  /// Device objects this process holds for others (exported, not yet released).
  size_t exported_count();

  /// How this process talks to producers of the device objects it imports (the core worker's
  /// connections): `register_import` blocks until the producer counted the import and answers
  /// with the memory's export handle as it is now (restored, if it had spilled; empty: the one in
  /// the descriptor), or nothing when the producer no longer has it; `release_import` tells it
  /// the mapping is closed. With a `transfer_group`, the importer does not see the object's GPU:
  /// the producer sends it through that pair group of the collectives instead (QueueSend).
  struct Peers {
    internal::OwnerAddress self;
    std::function<std::optional<std::string>(const internal::OwnerAddress& producer,
                                             const std::string& id,
                                             const std::string& transfer_group)>
        register_import;
    std::function<void(const internal::OwnerAddress& producer, const std::string& id)>
        release_import;
  };
  void SetPeers(Peers peers);
  /// The device objects the calling thread's task packed (cleared when a task enters).
  std::vector<std::string> TakeTaskExports();
  /// `object` (a task's result) holds these device objects: they stay until it is released.
  void Associate(const ObjectId& object, const std::vector<std::string>& ids);
  /// Drops exports no result holds and no importer maps (packed for a result never delivered).
  void Forget(const std::vector<std::string>& ids);
  /// The owner released `object`; its device objects go once no importer maps them.
  void ReleaseObject(const ObjectId& object);
  /// An importer maps device object `id` (false: not held here any more), or closed it. A spilled
  /// object is restored to device memory first; `memory_handle` is where it is now.
  bool AddImport(const std::string& id, const WorkerId& importer, std::string* memory_handle);
  void RemoveImport(const std::string& id, const WorkerId& importer);
  /// Sends device object `id` (its import by `importer` counted by AddImport) through the
  /// collectives' pair group `group` (rank 0 here, 1 the importer: nccl on CUDA, gloo on sim
  /// devices), after the sends queued for that group before it; the import is let go once the
  /// send is done or failed. For importers that do not see the object's GPU.
  void QueueSend(const std::string& id, const WorkerId& importer, const std::string& group);
  /// Waits for queued and running sends to end (the runtime's shutdown, before it disconnects).
  void WaitForSends();
  /// A process died: its imports are closed.
  void ImporterDied(const WorkerId& importer);
  /// Where device objects spill under memory pressure: the node's host object store, as objects
  /// this worker owns. Without one nothing spills.
  void SetHostStore(std::shared_ptr<StoreClient> store, WorkerId self);
  /// Spills device objects of `device` that nothing in this process uses and no other process
  /// maps, least recently used first, until `bytes` are freed or none is left; returns the bytes
  /// spilled. Allocations of GPU tasks call it when the device (or their share) is full.
  uint64_t Spill(int device, uint64_t bytes);
  struct SpillStats {
    uint64_t spilled_objects = 0;  // in the host store now
    uint64_t spilled_bytes = 0;
    uint64_t spills = 0;  // since start
    uint64_t restores = 0;
  };
  SpillStats spill_stats();
  /// Device objects moved through pair groups (to and from processes that do not see their GPU).
  using TransferStats = DeviceMoves::Stats;
  TransferStats transfer_stats() { return moves_.stats(); }

  /// A device of this worker has a sticky fault (a kernel faulted): the process must go, as a
  /// CUDA context cannot recover. Returns the fault.
  Status DeviceFault();

 private:
  Status EnsureBackend() PRISM_REQUIRES(mu_);
  // A device object of another process on a GPU this process does not see: received through a
  // pair group with its producer into a new tensor on this process's GPU (the task's first).
  gpu::Tensor Receive(const internal::OwnerAddress& producer, const std::string& id, int64_t pid,
                      gpu::DType dtype, std::vector<int64_t> shape, gpu::Context* ctx);
  // What a send through a pair group reads (DeviceMoves).
  Result<DeviceMoves::Source> SendSource(const std::string& id);
  // The stream imported tensors are ordered on outside GPU tasks (a driver reading one).
  Result<gpu::Stream*> ImportStream(int device) PRISM_REQUIRES(mu_);

  // A device object's copy in the host store while it is spilled (deleted with it).
  struct HostCopy {
    std::shared_ptr<StoreClient> store;
    ObjectId id;
    ~HostCopy() { store->Delete({id}); }
  };
  struct Exported {
    gpu::Tensor tensor;                 // invalid while spilled
    std::unique_ptr<gpu::Event> ready;  // shared: recorded when it was packed (or restored)
    int objects = 0;                    // results holding it, not yet released by their owners
    bool associated = false;            // held by some result (else: kept until exit)
    std::map<WorkerId, int> imports;    // processes mapping it
    std::string handle;                 // its memory's export handle (a new one after a restore)
    gpu::DType dtype{};
    std::vector<int64_t> shape;
    uint64_t bytes = 0;
    int device = 0;
    uint64_t last_use = 0;              // for spilling the least recently used first
    std::unique_ptr<HostCopy> spilled;  // set while it lives in the host store
  };
  // Spill: see Spill(). Restore: brings a spilled object back into device memory on the device's
  // import stream and records its event there (errors: the object cannot be used).
  uint64_t SpillLocked(int device, uint64_t bytes, const std::string& keep) PRISM_REQUIRES(mu_);
  Status RestoreLocked(const std::string& id, Exported& e) PRISM_REQUIRES(mu_);
  // Device memory that spills device objects when an allocation finds it full: what GPU tasks
  // allocate from.
  gpu::MemoryResource* TaskMemory(int device, gpu::MemoryResource* pool) PRISM_REQUIRES(mu_);
  std::map<int, std::unique_ptr<SpillingMemory>> task_memory_ PRISM_GUARDED_BY(mu_);
  std::shared_ptr<StoreClient> host_store_ PRISM_GUARDED_BY(mu_);
  WorkerId self_ PRISM_GUARDED_BY(mu_);
  uint64_t use_tick_ PRISM_GUARDED_BY(mu_) = 0;
  SpillStats spill_stats_ PRISM_GUARDED_BY(mu_);
  // Drops `id` if nothing holds it any more. Called with mu_ held; returns what to destroy
  // outside the lock.
  std::optional<Exported> MaybeFreeLocked(const std::string& id) PRISM_REQUIRES(mu_);
  // Closes imports whose last use on their streams is done (all of them, waiting, when `wait`):
  // the closer thread, every 20 ms while some are closing, and the destructor.
  void CloseFinishedImports(bool wait);
  void CloserLoop();
  std::map<std::string, Exported> exported_ PRISM_GUARDED_BY(mu_);
  struct Import;  // one mapping of another process's tensor (registering: see UnpackTensor)
  // What imports reach this object through: cleared when it goes, so a tensor kept past the
  // runtime (a Python array still viewing it) does nothing when it is finally dropped.
  struct Liveness {
    explicit Liveness(GpuTasks* o) : owner(o) {}
    Mutex mu;
    GpuTasks* owner PRISM_GUARDED_BY(mu);
  };
  std::shared_ptr<Liveness> liveness_ = std::make_shared<Liveness>(this);
  std::map<std::string, std::weak_ptr<Import>> imports_ PRISM_GUARDED_BY(mu_);
  struct Closing {
    std::vector<std::unique_ptr<gpu::Event>> done;  // one per stream that may have used it
    void* ptr;
    internal::OwnerAddress producer;
    std::string id;
    bool registered;  // counted at the producer: release it there once closed
  };
  std::vector<Closing> closing_ PRISM_GUARDED_BY(mu_);
  std::map<int, std::unique_ptr<gpu::Stream>> import_streams_ PRISM_GUARDED_BY(mu_);
  std::map<ObjectId, std::vector<std::string>> objects_
      PRISM_GUARDED_BY(mu_);  // result -> device objects
  Peers peers_;
  DeviceMoves moves_;  // sends and receives through pair groups
  // Closes finished imports every 20 ms while some are closing.
  std::condition_variable closer_cv_;
  bool stopping_ PRISM_GUARDED_BY(mu_) = false;
  std::thread closer_;

  Mutex mu_;
  bool tried_ PRISM_GUARDED_BY(mu_) = false;
  std::string topology_ PRISM_GUARDED_BY(mu_);
  Status backend_status_ PRISM_GUARDED_BY(mu_);
  std::unique_ptr<gpu::Backend> backend_ PRISM_GUARDED_BY(mu_);
  std::map<int, std::vector<std::unique_ptr<gpu::Stream>>> streams_ PRISM_GUARDED_BY(mu_);
  std::map<int, size_t> next_stream_ PRISM_GUARDED_BY(mu_);
  std::shared_ptr<gpu::Context> actor_context_ PRISM_GUARDED_BY(mu_);  // an actor's, for its life
};

}  // namespace prism

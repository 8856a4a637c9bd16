// A worker's GPU side: its device backend (created when a task first needs it), a pool of named
// streams per device, and the context of each running GPU task (gpu::CurrentContext()).
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/context.h>
#include <prism/gpu/tensor.h>

#include "base/thread_annotations.h"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace prism {

class GpuTasks {
 public:
  static constexpr int kStreamsPerDevice = 4;

  GpuTasks() = default;
  ~GpuTasks();

  /// The topology profile this process's sim devices follow, when it is not $PRISM_GPU_TOPOLOGY
  /// (a driver given InitOptions::gpu_topology). Before the backend is first used.
  void SetTopology(std::string spec) {
    std::lock_guard<std::mutex> lock(mu_);
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
  /// Device objects this process holds for others (exported, not yet released).
  size_t exported_count();
  /// Closes imports whose last use on their stream is done (all of them, waiting, when `wait`).
  void CloseFinishedImports(bool wait);
  /// A device of this worker has a sticky fault (a kernel faulted): the process must go, as a
  /// CUDA context cannot recover. Returns the fault.
  Status DeviceFault();

 private:
  Status EnsureBackend() PRISM_REQUIRES(mu_);
  // The stream imported tensors are ordered on outside GPU tasks (a driver reading one).
  Result<gpu::Stream*> ImportStream(int device) PRISM_REQUIRES(mu_);

  struct Exported {
    gpu::Tensor tensor;
    std::unique_ptr<gpu::Event> ready;  // shared: recorded when it was first packed
  };
  std::map<std::string, Exported> exported_ PRISM_GUARDED_BY(mu_);
  struct Import;  // one mapping of another process's tensor
  std::map<std::string, std::weak_ptr<Import>> imports_ PRISM_GUARDED_BY(mu_);
  struct Closing {
    std::unique_ptr<gpu::Event> done;
    void* ptr;
  };
  std::vector<Closing> closing_ PRISM_GUARDED_BY(mu_);
  std::map<int, std::unique_ptr<gpu::Stream>> import_streams_ PRISM_GUARDED_BY(mu_);

  std::mutex mu_;
  bool tried_ PRISM_GUARDED_BY(mu_) = false;
  std::string topology_ PRISM_GUARDED_BY(mu_);
  Status backend_status_ PRISM_GUARDED_BY(mu_);
  std::unique_ptr<gpu::Backend> backend_ PRISM_GUARDED_BY(mu_);
  std::map<int, std::vector<std::unique_ptr<gpu::Stream>>> streams_ PRISM_GUARDED_BY(mu_);
  std::map<int, size_t> next_stream_ PRISM_GUARDED_BY(mu_);
  std::shared_ptr<gpu::Context> actor_context_ PRISM_GUARDED_BY(mu_);  // an actor's, for its life
};

}  // namespace prism

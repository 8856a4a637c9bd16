// What a GPU task or actor runs with. A worker is bound to its GPUs when it starts
// (CUDA_VISIBLE_DEVICES), so inside a task that holds GPUs, device 0 is its first GPU.
#pragma once

#include <prism/gpu/backend.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace prism::gpu {

/// The running task's device, a stream of its worker's pool for that device, and the device's
/// stream-ordered memory (capped by the task's gpu_memory). Valid while the task runs; GPU actors
/// keep theirs for life. Work a task leaves on its stream runs on after it returns: a task that
/// returns host values synchronizes first (Stream::Synchronize).
class Context {
 public:
  /// `streams[i]` and `memories[i]` belong to `devices[i]`.
  Context(Backend& backend, std::vector<int> devices, std::vector<Stream*> streams,
          std::vector<MemoryResource*> memories, std::optional<uint64_t> gpu_memory)
      : backend_(&backend),
        devices_(std::move(devices)),
        streams_(std::move(streams)),
        memories_(std::move(memories)),
        gpu_memory_(gpu_memory) {}
  Backend& backend() const { return *backend_; }
  /// The task's (first) device, as this process numbers it.
  int device() const { return devices_.front(); }
  /// Every device the task holds.
  const std::vector<int>& devices() const { return devices_; }
  /// The stream the task's work goes on: one of a pool, so that tasks of one worker can overlap.
  Stream& stream() const { return *streams_.front(); }
  /// The task's stream on another of its devices; prism::InvalidArgumentError for a device the
  /// task does not hold.
  Stream& stream(int device) const { return *streams_[Index(device)]; }
  MemoryResource& memory() const { return *memories_.front(); }
  MemoryResource& memory(int device) const { return *memories_[Index(device)]; }
  /// The task's cap on device memory (TaskOptions::gpu_memory), if it has one.
  std::optional<uint64_t> gpu_memory() const { return gpu_memory_; }
  /// Device memory on the task's stream, from the task's device.
  Result<DeviceBuffer> Allocate(size_t bytes) const {
    return DeviceBuffer::Allocate(memory(), bytes, stream());
  }

 private:
  size_t Index(int device) const;

  Backend* backend_;
  std::vector<int> devices_;
  std::vector<Stream*> streams_;
  std::vector<MemoryResource*> memories_;
  std::optional<uint64_t> gpu_memory_;
};

/// The calling task's GPU context. Throws prism::RuntimeError outside a task (or actor) that
/// holds GPUs, or when this process has no GPU backend (the message says why).
Context& CurrentContext();

}  // namespace prism::gpu

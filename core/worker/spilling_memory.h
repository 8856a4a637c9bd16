// Device memory that makes room when it is full: an allocation that finds the device (or the
// task's share of it) full asks `spill` to move device objects out of it (GpuTasks spills the
// least recently used ones to the host store) and tries again, for as long as something was
// spilled. Everything else is the pool's. What GPU tasks allocate from.
#pragma once

#include <prism/gpu/backend.h>

#include <cstdint>
#include <functional>
#include <optional>

namespace prism {

class SpillingMemory final : public gpu::MemoryResource {
 public:
  /// `spill(device, bytes)`: frees up to `bytes` of `device`; returns the bytes freed (0: none).
  using Spill = std::function<uint64_t(int device, uint64_t bytes)>;
  SpillingMemory(gpu::MemoryResource* pool, Spill spill) : pool_(pool), spill_(std::move(spill)) {}

  int device() const override { return pool_->device(); }
  Result<void*> Allocate(size_t bytes, gpu::Stream& stream) override;
  Status Deallocate(void* ptr, size_t bytes, gpu::Stream& stream) override {
    return pool_->Deallocate(ptr, bytes, stream);
  }
  uint64_t bytes_in_use() const override { return pool_->bytes_in_use(); }
  std::optional<uint64_t> limit() const override { return pool_->limit(); }
  void set_limit(std::optional<uint64_t> limit) override { pool_->set_limit(limit); }
  Result<gpu::IpcHandle> Export(void* ptr, size_t bytes) override {
    return pool_->Export(ptr, bytes);
  }
  bool Owns(const void* ptr, size_t bytes) const override { return pool_->Owns(ptr, bytes); }

 private:
  gpu::MemoryResource* pool_;
  Spill spill_;
};

}  // namespace prism

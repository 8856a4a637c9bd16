// A sim device's memory: a memfd arena (so other processes can map exports), stream-ordered
// allocation with a quarantine that keeps freed (and poisoned) blocks out of reuse for a while.
#pragma once

#include <deque>

#include "gpu/sim/sim_backend.h"
#include "object_store/allocator.h"

namespace prism::gpu::sim {

class SimMemory final : public MemoryResource {
 public:
  /// Called with the backend's mutex held.
  static Result<std::unique_ptr<SimMemory>> Create(SimBackend* backend, int device,
                                                   uint64_t capacity);
  ~SimMemory() override;

  int device() const override { return device_; }
  Result<void*> Allocate(size_t bytes, Stream& stream) override;
  Status Deallocate(void* ptr, size_t bytes, Stream& stream) override;
  uint64_t bytes_in_use() const override;
  std::optional<uint64_t> limit() const override;
  void set_limit(std::optional<uint64_t> limit) override;
  Result<IpcHandle> Export(void* ptr, size_t bytes) override;
  bool Owns(const void* ptr, size_t bytes) const override;

  bool Contains(const void* p) const {
    auto* b = static_cast<const uint8_t*>(p);
    return b >= base_ && b < base_ + capacity_;
  }

 private:
  SimMemory(SimBackend* backend, int device) : backend_(backend), device_(device), arena_(0) {}
  // Returns quarantined blocks whose poisoning has run; all of them when `all`.
  void Release(bool all) PRISM_REQUIRES(backend_->mu_);

  SimBackend* backend_;
  int device_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t capacity_ = 0;
  // Guarded by the backend's mutex.
  ArenaAllocator arena_;
  uint64_t in_use_ = 0;
  std::optional<uint64_t> limit_;
  struct Quarantined {
    uint64_t offset;
    size_t bytes;
    std::shared_ptr<StreamCore> stream;
    uint64_t seq;  // the poisoning op
  };
  std::deque<Quarantined> quarantine_;
  uint64_t quarantine_bytes_ = 0;
};

}  // namespace prism::gpu::sim

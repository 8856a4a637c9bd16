#include "worker/spilling_memory.h"

namespace prism {

Result<void*> SpillingMemory::Allocate(size_t bytes, gpu::Stream& stream) {
  Result<void*> p = pool_->Allocate(bytes, stream);
  // Full (the device, or the task's share of it): device objects nobody here uses go to the host
  // store, least recently used first, and the allocation is tried again.
  while (!p.ok() && p.status().code() == StatusCode::kOutOfMemory && spill_(device(), bytes) > 0) {
    p = pool_->Allocate(bytes, stream);
  }
  return p;
}

}  // namespace prism

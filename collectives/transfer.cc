// Device objects between processes that do not see each other's GPUs: the core worker (which
// cannot link this library) loads it and moves the bytes through a pair group of two ranks,
// rank 0 the producer and 1 the importer, nccl on CUDA devices and gloo on sim devices. A
// failure drops the group here; the importer names a new one for its next try.
#include <cstdio>

#include "collectives/internal.h"

// 0 on success; else `error` says why.
extern "C" __attribute__((visibility("default"))) int prism_device_transfer(
    const char* group, int rank, int nccl, int device, int send, void* ptr, uint64_t bytes,
    void* stream, int64_t timeout_ms, char* error, size_t size) {
  namespace col = prism::collective;
  std::string name(group);
  try {
    col::Group* g = col::InGroup(name) ? &col::GetGroup(name) : nullptr;
    if (g == nullptr) {
      g = &col::internal::InitGroupOn(name, 2, rank,
                                      nccl ? col::Backend::kNccl : col::Backend::kGloo,
                                      {.timeout = std::chrono::milliseconds(timeout_ms)}, device,
                                      /*environment=*/false);
    }
    auto* s = static_cast<prism::gpu::Stream*>(stream);
    if (send) {
      g->Send(ptr, bytes, col::DType::kUInt8, 1 - rank, s);
    } else {
      g->Recv(ptr, bytes, col::DType::kUInt8, 1 - rank, s);
    }
    return 0;
  } catch (const std::exception& e) {
    try {
      col::DestroyGroup(name);
    } catch (const std::exception&) {
    }
    std::snprintf(error, size, "%s", e.what());
    return 1;
  }
}

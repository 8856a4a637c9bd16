#include "worker/device_transfer.h"

#include "base/process_info.h"

#include <dlfcn.h>

namespace prism {
namespace {

struct TransferLibrary {
  int (*move)(const char* group, int rank, int nccl, int device, int send, void* ptr, uint64_t bytes, void* stream,
              int64_t timeout_ms, char* error, size_t size) = nullptr;
  std::string error;
};

const TransferLibrary& TransferLib() {
  static TransferLibrary lib = [] {
    TransferLibrary l;
    Result<void*> h = OpenBesideLibprism("libprism_collective.so");
    if (!h.ok()) {
      l.error = "the collectives library, which moves it, is not available (" + h.status().message() + ")";
      return l;
    }
    l.move = reinterpret_cast<decltype(l.move)>(dlsym(*h, "prism_device_transfer"));
    if (l.move == nullptr) l.error = "libprism_collective.so lacks prism_device_transfer";
    return l;
  }();
  return lib;
}

}  // namespace

Status DeviceTransferAvailable() {
  const TransferLibrary& lib = TransferLib();
  return lib.move != nullptr ? Status::OK() : Status::Unavailable(lib.error);
}

Status TransferThroughPairGroup(const std::string& group, bool send, gpu::Backend& backend, int device, void* ptr,
                                uint64_t bytes, gpu::Stream* stream) {
  const TransferLibrary& lib = TransferLib();
  if (lib.move == nullptr) return Status::Unavailable(lib.error);
  char error[1024] = {};
  if (lib.move(group.c_str(), send ? 0 : 1, backend.name() != "sim", device, send ? 1 : 0, ptr, bytes, stream,
               std::chrono::milliseconds(kDeviceTransferTimeout).count(), error, sizeof error) != 0) {
    return Status::Unavailable(error);
  }
  return Status::OK();
}

}  // namespace prism

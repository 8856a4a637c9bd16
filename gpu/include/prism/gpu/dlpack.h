// DLPack 1.x, the tensor exchange ABI of PyTorch, CuPy, JAX and NumPy. The base types come from
// <dlpack/dlpack.h>; when that header predates 1.0 (Debian 12 ships 0.6), the versioned managed
// tensor and its flags are declared here, with the layout the DLPack 1.x specification gives them.
// (Include a DLPack 1.x header before this one, or not at all.)
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>

#if !defined(DLPACK_MAJOR_VERSION)
#define PRISM_DLPACK_DECLARED_HERE 1
extern "C" {
typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;
}
#define DLPACK_FLAG_BITMASK_READ_ONLY (UINT64_C(1) << 0)
#define DLPACK_FLAG_BITMASK_IS_COPIED (UINT64_C(1) << 1)
#endif

namespace prism::gpu {
/// The DLPack version prism produces.
inline constexpr uint32_t kDLPackMajor = 1;
inline constexpr uint32_t kDLPackMinor = 0;
}  // namespace prism::gpu

// Copies of large values into the object store.
#pragma once

#include <cstddef>

namespace prism::internal {

/// Copies `n` bytes from `src` to `dst` (which must not overlap). At 1 MiB and above it stores
/// around the cache, 64-byte aligned at the destination, whatever the alignment of `src`: glibc's
/// memcpy runs `rep movsb` there, which on many x86 CPUs drops to a third of the memory's speed
/// when `src` and `dst` sit at different offsets within a cache line (a value's bytes in the
/// store start 64-aligned, a caller's buffer rarely is). Below 1 MiB it is memcpy. From 32 MiB
/// the copy is split over up to 4 threads (no more than the CPUs this process may use).
void CopyBytes(void* dst, const void* src, size_t n);

}  // namespace prism::internal

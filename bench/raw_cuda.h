// The raw baselines of the GPU benchmark: plain copies without prism in between.
#pragma once

#include <cstddef>

enum class RawCopyKind { kHostToDevice, kDeviceToDevice, kDeviceToHost };

/// Seconds per cudaMemcpyAsync of `bytes` (pageable host memory, device memory from cudaMalloc),
/// timed with CUDA events over `reps` copies; 0 when this build has no CUDA runtime or no device.
double RawCudaCopySeconds(RawCopyKind kind, size_t bytes, int reps);
/// Seconds per memcpy of `bytes` between two host buffers (what sim device memory is).
double RawHostCopySeconds(size_t bytes, int reps);

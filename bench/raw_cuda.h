// The raw baselines of the GPU benchmark: plain copies without prism in between.
#pragma once

#include <cstddef>

enum class RawCopyKind { kHostToDevice, kDeviceToDevice, kDeviceToHost };

/// Seconds per cudaMemcpyAsync of `bytes` (pageable host memory holding data, device memory from
/// cudaMalloc), timed with CUDA events over `reps` copies; 0 when this build has no CUDA runtime or
/// no device.
double RawCudaCopySeconds(RawCopyKind kind, size_t bytes, int reps);
/// The chain benchmark written directly against the CUDA runtime: wall-clock seconds to the end,
/// ordered by events and with a host sync after each step (both 0 without CUDA; -1 if wrong).
struct RawChainSeconds {
  double events = 0;
  double host_sync = 0;
};
RawChainSeconds RawCudaChain(int length);
/// Seconds per memcpy of `bytes` between two host buffers (what sim device memory is).
double RawHostCopySeconds(size_t bytes, int reps);

// NVTX ranges: what Nsight Systems (and any NVTX tool) shows on a process's timeline. prism marks
// task execution, transfers and allocations with them. Without a tool attached they cost a
// pointer check.
#pragma once

#include <string>

namespace prism::gpu {

/// An NVTX push/pop range on the calling thread for as long as it lives.
class NvtxRange {
 public:
  explicit NvtxRange(const std::string& message);
  explicit NvtxRange(const char* message);
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

/// Whether this build emits NVTX ranges (it does when built where the NVTX headers were found).
bool NvtxEnabled();

}  // namespace prism::gpu

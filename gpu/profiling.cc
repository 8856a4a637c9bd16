#include <prism/gpu/profiling.h>

#ifdef PRISM_HAVE_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace prism::gpu {

#ifdef PRISM_HAVE_NVTX
NvtxRange::NvtxRange(const std::string& message) { nvtxRangePushA(message.c_str()); }
NvtxRange::NvtxRange(const char* message) { nvtxRangePushA(message); }
NvtxRange::~NvtxRange() { nvtxRangePop(); }
bool NvtxEnabled() { return true; }
#else
NvtxRange::NvtxRange(const std::string&) {}
NvtxRange::NvtxRange(const char*) {}
NvtxRange::~NvtxRange() = default;
bool NvtxEnabled() { return false; }
#endif

}  // namespace prism::gpu

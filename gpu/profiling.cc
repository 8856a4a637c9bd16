#include <prism/gpu/profiling.h>

#ifdef PRISM_HAVE_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace prism::gpu {

#ifdef PRISM_HAVE_NVTX
namespace {
// NVTX loads its tool (or its no-ops) on the first call, writing its function table unguarded:
// done once, behind a static's guard, before any thread pushes a range.
void InitNvtxOnce() {
  static const bool initialized = [] {
    nvtxInitialize(nullptr);
    return true;
  }();
  (void)initialized;
}
}  // namespace

NvtxRange::NvtxRange(const std::string& message) {
  InitNvtxOnce();
  nvtxRangePushA(message.c_str());
}
NvtxRange::NvtxRange(const char* message) {
  InitNvtxOnce();
  nvtxRangePushA(message);
}
NvtxRange::~NvtxRange() { nvtxRangePop(); }
bool NvtxEnabled() { return true; }
#else
NvtxRange::NvtxRange(const std::string&) {}
NvtxRange::NvtxRange(const char*) {}
NvtxRange::~NvtxRange() = default;
bool NvtxEnabled() { return false; }
#endif

}  // namespace prism::gpu

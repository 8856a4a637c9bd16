// An NVTX injection library for tests (NVTX_INJECTION64_PATH=this.so): it records every range
// push and pop of the process, one line each ("<pid> push <message>", "<pid> pop"), appended to
// the file $PRISM_NVTX_RECORD. What Nsight would see, without Nsight.
#include <fcntl.h>
#include <nvtx3/nvToolsExt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int record_fd = -1;

void Line(const std::string& text) {
  if (record_fd < 0) return;
  std::string line = std::to_string(getpid()) + " " + text + "\n";
  ssize_t ignored = write(record_fd, line.data(), line.size());  // O_APPEND: whole lines
  (void)ignored;
}

int NVTX_API PushA(const char* message) {
  Line(std::string("push ") + (message ? message : ""));
  return 0;
}
int NVTX_API Pop() {
  Line("pop");
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_table) {
  const char* path = std::getenv("PRISM_NVTX_RECORD");
  if (!path) return 0;
  record_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  auto* callbacks = static_cast<const NvtxExportTableCallbacks*>(get_table(NVTX_ETID_CALLBACKS));
  if (!callbacks || record_fd < 0) return 0;
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &table, &size) || !table) return 0;
  if (size > NVTX_CBID_CORE_RangePushA)
    *table[NVTX_CBID_CORE_RangePushA] = reinterpret_cast<NvtxFunctionPointer>(&PushA);
  if (size > NVTX_CBID_CORE_RangePop)
    *table[NVTX_CBID_CORE_RangePop] = reinterpret_cast<NvtxFunctionPointer>(&Pop);
  return 1;
}

// Facts about executables and processes that the daemon and workers compare or reuse.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace prism {

/// The GNU build id of this process's main executable (hex), or, when it has none, a
/// fingerprint of the file (device, inode, size, mtime). A rebuilt binary gets a new value.
std::string SelfBuildId();

/// argv, environment and working directory of a live process, read from /proc.
struct ProcessLaunchInfo {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd;
};
Result<ProcessLaunchInfo> ReadLaunchInfo(pid_t pid);

/// Whether process `pid` is gone: no such process, or a zombie (it died; its parent has not reaped
/// it).
bool ProcessGone(pid_t pid);

/// The folder libprism is loaded from (its libraries loaded on demand - the cuda backend, the
/// collectives and their nccl backend - sit beside it), or "" when it cannot be told.
std::string LibprismDir();

/// dlopen(RTLD_NOW | RTLD_LOCAL) of `file` in LibprismDir(); Unavailable, with dlerror's words,
/// when it does not load.
Result<void*> OpenBesideLibprism(const std::string& file);

}  // namespace prism

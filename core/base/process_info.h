// Facts about executables and processes that the daemon and workers compare or reuse.
#pragma once

#include "base/status.h"

#include <sys/types.h>

#include <string>
#include <vector>

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

}  // namespace prism

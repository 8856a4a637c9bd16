// Starting worker processes, behind an interface so the daemon's logic can run against a fake.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/status.h"

namespace prism {

struct WorkerLaunch {
  int executable_fd = -1;  // the driver's executable, held open since it registered
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd;
  /// CPUs the worker may run on (its GPUs' NUMA node); empty: the daemon's own.
  std::vector<int> cpus;
  /// A command that runs the worker (found on PATH), given `executable_path` and argv[1:] after
  /// it; empty: the executable runs directly (from executable_fd).
  std::vector<std::string> prefix;
  std::string executable_path;
};

class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  virtual Result<pid_t> Launch(const WorkerLaunch& launch) = 0;
};

/// fork + execveat(fd, "", AT_EMPTY_PATH): the worker runs exactly the bytes the driver ran,
/// even if the file on disk was replaced. The child dies with the daemon (PR_SET_PDEATHSIG).
/// Call from a single-threaded process (the daemon is one).
class ProcessWorkerLauncher : public WorkerLauncher {
 public:
  Result<pid_t> Launch(const WorkerLaunch& launch) override;
};

}  // namespace prism

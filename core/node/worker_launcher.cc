#include "node/worker_launcher.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace prism {

Result<pid_t> ProcessWorkerLauncher::Launch(const WorkerLaunch& launch) {
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv, envp;
  std::vector<std::string> prefixed;  // prefix..., the executable's path, argv[1:]
  if (!launch.prefix.empty()) {
    prefixed = launch.prefix;
    // argv[0] when it names a file (a Python venv's interpreter must keep its own path; a
    // relative one resolves in the worker's directory, as the driver's did), else the resolved one.
    bool has_path = !launch.argv.empty() && launch.argv[0].find('/') != std::string::npos;
    prefixed.push_back(has_path ? launch.argv[0] : launch.executable_path);
    for (size_t i = 1; i < launch.argv.size(); ++i) prefixed.push_back(launch.argv[i]);
  }
  for (const auto& a : launch.prefix.empty() ? launch.argv : prefixed)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : launch.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (int c : launch.cpus) {
    if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &cpus);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Status::IOError(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!launch.cwd.empty() && chdir(launch.cwd.c_str()) != 0) {
      // Keep going in the daemon's directory; the worker can still run.
    }
    if (!launch.cpus.empty()) sched_setaffinity(0, sizeof cpus, &cpus);  // best effort
    syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
    if (!launch.prefix.empty()) {
      execvpe(argv[0], argv.data(), envp.data());
      const char msg[] = "prism: cannot start a worker: its launch prefix did not run\n";
      ssize_t ignored = write(2, msg, sizeof(msg) - 1);
      (void)ignored;
      _exit(127);
    }
    syscall(SYS_execveat, launch.executable_fd, "", argv.data(), envp.data(), AT_EMPTY_PATH);
    const char msg[] = "prism: cannot start a worker: execveat failed\n";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
  }
  return pid;
}

}  // namespace prism

#include "node/worker_pool.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/ids.h"
#include "base/logging.h"
#include "base/process_info.h"

namespace prism {
namespace {

// Whether `ancestor` is `pid`'s parent, grandparent, ... (from /proc/<pid>/stat).
bool IsDescendantOf(pid_t pid, pid_t ancestor) {
  for (int depth = 0; depth < 16 && pid > 1; ++depth) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    auto close = text.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) return false;
    std::istringstream rest(text.substr(close + 2));
    char state;
    pid_t parent = 0;
    if (!(rest >> state >> parent)) return false;
    if (parent == ancestor) return true;
    pid = parent;
  }
  return false;
}

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return std::string("killed by signal ") + std::to_string(WTERMSIG(wait_status)) + " (" +
           strsignal(WTERMSIG(wait_status)) + ")";
  }
  return "ended (status " + std::to_string(wait_status) + ")";
}

}  // namespace

WorkerPool::WorkerPool(asio::io_context& io, WorkerLauncher& launcher, WorkerPoolConfig config)
    : io_(io), launcher_(launcher), config_(std::move(config)) {
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v != nullptr) {
    std::stringstream in(v);
    for (std::string item; std::getline(in, item, ',');) visible_devices_.push_back(item);
  }
}

WorkerPool::~WorkerPool() {
  for (auto& [jid, job] : jobs_) {
    if (job.exe_fd >= 0) ::close(job.exe_fd);
  }
  if (self_exe_fd_ >= 0) ::close(self_exe_fd_);
}

void WorkerPool::Open() {
  self_exe_fd_ = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  self_build_id_ = SelfBuildId();
}

Result<WorkerPool::Job> WorkerPool::JobOf(pid_t pid, const rpc::Hello& hello) {
  if (hello.worker_argv_size() > 256 || hello.worker_launch_prefix_size() > 256) {
    return Status::InvalidArgument(
        "worker_argv and worker_launch_prefix take at most 256 arguments");
  }
  std::string exe = "/proc/" + std::to_string(pid) + "/exe";
  int fd = ::open(exe.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("cannot open the driver's executable " + exe);
  auto launch = ReadLaunchInfo(pid);
  if (!launch.ok()) {
    ::close(fd);
    return launch.status();
  }
  Job job;
  job.exe_fd = fd;
  job.build_id = hello.build_id();
  job.argv = std::move(launch->argv);
  if (hello.worker_argv_size() > 0)
    job.argv.assign(hello.worker_argv().begin(), hello.worker_argv().end());
  job.code_search_path.assign(hello.code_search_path().begin(), hello.code_search_path().end());
  job.python_executable = hello.python_executable();
  job.launch_prefix.assign(hello.worker_launch_prefix().begin(),
                           hello.worker_launch_prefix().end());
  job.timeline = hello.record_timeline();
  std::error_code link_error;
  job.exe_path = std::filesystem::read_symlink(exe, link_error).string();
  job.env = std::move(launch->env);
  job.cwd = std::move(launch->cwd);
  return job;
}

WorkerPool::Job WorkerPool::GuestJobOf(const rpc::JobInfo& info) {
  Job job;
  job.id = JobId::FromBinary(info.job_id());
  job.guest = true;
  if (WorkerId::IsValidBinary(info.driver_worker_id()))
    job.driver_worker = WorkerId::FromBinary(info.driver_worker_id());
  job.build_id = info.build_id();
  job.argv.assign(info.argv().begin(), info.argv().end());
  job.env.assign(info.env().begin(), info.env().end());
  job.cwd = info.cwd();
  job.code_search_path.assign(info.code_search_path().begin(), info.code_search_path().end());
  job.python_executable = info.python_executable();
  job.launch_prefix.assign(info.launch_prefix().begin(), info.launch_prefix().end());
  job.timeline = info.timeline();
  job.exe_path = info.executable();
  job.exe_fd =
      info.executable().empty() ? -1 : ::open(info.executable().c_str(), O_RDONLY | O_CLOEXEC);
  if (job.exe_fd < 0) {
    job.no_executable = "this node cannot start job " + std::to_string(JobIdToInt(job.id)) +
                        "'s workers: its driver's executable " + info.executable() + " (on " +
                        info.hostname() + ") is not on this machine (" + std::strerror(errno) +
                        "); give the job a code search path the generic worker loads on every "
                        "node, or install the program at the same path";
  }
  // Where the driver ran may not exist here: the workers start in / then.
  std::error_code ec;
  if (job.cwd.empty() || !std::filesystem::is_directory(job.cwd, ec)) job.cwd = "/";
  return job;
}

void WorkerPool::AddJob(Job job) {
  JobId id = job.id;
  jobs_[id] = std::move(job);
}

WorkerPool::Job* WorkerPool::FindJob(const JobId& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void WorkerPool::EraseJob(const JobId& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  if (it->second.exe_fd >= 0) ::close(it->second.exe_fd);
  jobs_.erase(it);
}

Result<WorkerId> WorkerPool::Register(const rpc::Hello& hello, pid_t peer_pid,
                                      std::shared_ptr<rpc::Connection> conn) {
  WorkerId id = WorkerId::FromBinary(hello.worker_id());
  auto it = workers_.find(id);
  if (!WorkerId::IsValidBinary(hello.worker_id()) || it == workers_.end() ||
      it->second.state != State::kStarting || it->second.conn) {
    return Status::NotFound("no worker " + id.Hex() + " is being started by this daemon");
  }
  Worker& w = it->second;
  // Under a launch prefix (nsys profile ...) the worker may be a descendant of what was forked.
  if (peer_pid != w.pid && !IsDescendantOf(peer_pid, w.pid)) {
    return Status::PermissionDenied("worker " + id.Hex() + " registered from the wrong process");
  }
  w.process = peer_pid;
  Job* job = FindJob(w.job);
  if (job == nullptr) return Status::NotFound("the job of this worker has ended");
  // (A Python worker is an interpreter the driver named: there is no build of ours to match.)
  const std::string& expected_build = w.runtime == "cpp" ? self_build_id_ : job->build_id;
  if (w.runtime != "python" && hello.build_id() != expected_build) {
    job->start_failures = config_.max_start_failures;  // no point in trying again
    job->start_failure_final = true;
    job->last_start_failure = "the worker's executable (build id " + hello.build_id() +
                              ") differs from its driver's (" + job->build_id +
                              "): was it rebuilt while the job ran?";
    return Status::InvalidArgument(job->last_start_failure);
  }
  w.state = State::kIdle;
  w.conn = std::move(conn);
  if (w.register_timer) w.register_timer->cancel();
  job->start_failures = 0;
  return id;
}

WorkerPool::Worker* WorkerPool::Find(const WorkerId& id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

WorkerPool::Worker* WorkerPool::FindIdle(const JobId& job, const std::string& env_key) {
  for (auto& [wid, w] : workers_) {
    if (w.job == job && w.state == State::kIdle && w.env_key == env_key) return &w;
  }
  return nullptr;
}

int WorkerPool::Starting(const JobId& job, const std::string& env_key) const {
  int starting = 0;
  for (const auto& [wid, w] : workers_) {
    starting += (w.job == job && w.env_key == env_key && w.state == State::kStarting) ? 1 : 0;
  }
  return starting;
}

std::map<std::string, std::string> WorkerPool::GpuWorkerEnv(const std::vector<int>& gpus) const {
  std::map<std::string, std::string> env;
  std::string visible;
  for (int g : gpus) {
    if (!visible.empty()) visible += ",";
    // Instance i is the i-th device the daemon itself sees.
    visible +=
        g < static_cast<int>(visible_devices_.size()) ? visible_devices_[g] : std::to_string(g);
  }
  env["CUDA_VISIBLE_DEVICES"] = visible;
  if (!config_.gpu_topology_spec.empty()) env["PRISM_GPU_TOPOLOGY"] = config_.gpu_topology_spec;
  // Which backend runs them, and how sim devices are made: the node's choice (e.g. sim devices
  // for a profile), not only the job's.
  for (const char* name : {"PRISM_GPU_BACKEND", "PRISM_GPU_COUNT_CALLS", "PRISM_SIM_DEVICE_MEMORY",
                           "PRISM_SIM_JITTER_US"}) {
    if (const char* v = std::getenv(name); v != nullptr) env[name] = v;
  }
  return env;
}

bool WorkerPool::Start(Job& job, const std::map<std::string, std::string>& request_env,
                       const std::string& env_key, const std::string& runtime,
                       const std::vector<int>& gpus) {
  WorkerId id = RandomUniqueId();
  Worker w;
  w.id = id;
  w.job = job.id;
  w.env_key = env_key;
  w.runtime = runtime;
  std::map<std::string, std::string> env = request_env;
  if (job.timeline) env["PRISM_TIMELINE"] = "1";
  if (!gpus.empty()) {
    for (auto& [name, value] : GpuWorkerEnv(gpus)) env[name] = value;  // prism's binding wins
  }
  w.socket_path = config_.session_dir + "/w-" + id.Hex().substr(0, 16) + ".sock";
  if (job.guest && runtime.empty() && job.exe_fd < 0) {
    job.start_failures = config_.max_start_failures;  // no point in trying again
    job.start_failure_final = true;
    job.last_start_failure = job.no_executable;
    PRISM_LOG_ERROR("{}", job.last_start_failure);
    return false;
  }
  WorkerLaunch launch;
  launch.executable_fd = job.exe_fd;
  launch.argv = job.argv;
  launch.prefix = job.launch_prefix;
  launch.executable_path = job.exe_path;
  int python_fd = -1;
  if (runtime == "python") {
    python_fd = ::open(job.python_executable.c_str(), O_RDONLY | O_CLOEXEC);
    if (python_fd < 0) {
      job.start_failures = config_.max_start_failures;  // no point in trying again
      job.start_failure_final = true;
      job.last_start_failure = "cannot open the Python interpreter " + job.python_executable;
      PRISM_LOG_ERROR("{}", job.last_start_failure);
      return false;
    }
    launch.executable_fd = python_fd;
    launch.argv = {job.python_executable, "-m", "prism._worker"};
    launch.executable_path = job.python_executable;
  }
  if (runtime == "cpp") {
    // The generic C++ worker: this daemon's own executable, loading the job's libraries.
    launch.executable_fd = self_exe_fd_;
    launch.argv = {"prism", "worker"};
    std::error_code link_error;
    launch.executable_path = std::filesystem::read_symlink("/proc/self/exe", link_error).string();
    for (const auto& dir : job.code_search_path) {
      launch.argv.push_back("--code-search-path");
      launch.argv.push_back(dir);
    }
  }
  launch.cwd = job.cwd;
  if (!gpus.empty() && config_.gpu_topology != nullptr) {
    // Pinned to its GPUs' NUMA node, where that node's CPUs are ours to use.
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (sched_getaffinity(0, sizeof mine, &mine) == 0) {
      for (int c : config_.gpu_topology->CpusNear(gpus)) {
        if (c < CPU_SETSIZE && CPU_ISSET(c, &mine)) launch.cpus.push_back(c);
      }
    }
  }
  static const char* kOurs[] = {"PRISM_WORKER_MODE=", "PRISM_SESSION_DIR=", "PRISM_CLUSTER_TOKEN=",
                                "PRISM_WORKER_ID=",   "PRISM_JOB_ID=",      "PRISM_LOG_LEVEL="};
  for (const auto& e : job.env) {
    bool ours = false;
    for (const char* k : kOurs) ours = ours || e.rfind(k, 0) == 0;
    for (const auto& [name, value] : env) ours = ours || e.rfind(name + "=", 0) == 0;  // replaced
    if (!ours) launch.env.push_back(e);
  }
  for (const auto& [name, value] : env) launch.env.push_back(name + "=" + value);
  launch.env.push_back("PRISM_WORKER_MODE=1");
  launch.env.push_back("PRISM_SESSION_DIR=" + config_.session_dir);
  launch.env.push_back("PRISM_CLUSTER_TOKEN=" + config_.token);
  launch.env.push_back("PRISM_WORKER_ID=" + id.Hex());
  launch.env.push_back("PRISM_JOB_ID=" + std::to_string(JobIdToInt(job.id)));
  if (!config_.log_level.empty()) launch.env.push_back("PRISM_LOG_LEVEL=" + config_.log_level);
  auto pid = launcher_.Launch(launch);
  if (python_fd >= 0) ::close(python_fd);
  if (!pid.ok()) {
    job.start_failures++;
    job.last_start_failure = pid.status().message();
    PRISM_LOG_ERROR("cannot start a worker: {}", pid.status().ToString());
    return false;
  }
  w.pid = *pid;
  started_total_++;
  w.register_timer = std::make_unique<asio::steady_timer>(io_, config_.register_timeout);
  w.register_timer->async_wait([this, id](const asio::error_code& ec) {
    if (ec) return;
    auto it = workers_.find(id);
    if (it == workers_.end() || it->second.state != State::kStarting) return;
    PRISM_LOG_WARN("worker {} did not register in time: killing it", id.Hex());
    ::kill(it->second.pid, SIGKILL);
  });
  worker_pids_[w.pid] = id;
  PRISM_LOG_DEBUG("started worker {} (pid {}) for job {}", id.Hex(), w.pid, JobIdToInt(job.id));
  workers_[id] = std::move(w);
  return true;
}

void WorkerPool::Signal(const WorkerId& id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  if (it->second.pid > 0) ::kill(it->second.pid, SIGKILL);
  if (it->second.process > 0 && it->second.process != it->second.pid)
    ::kill(it->second.process, SIGKILL);
}

std::optional<WorkerPool::Worker> WorkerPool::Take(const WorkerId& id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return std::nullopt;
  Worker w = std::move(it->second);
  workers_.erase(it);
  if (w.register_timer) w.register_timer->cancel();
  return w;
}

void WorkerPool::Reap(const std::function<void(const WorkerId&, const std::string&)>& exited) {
  int status = 0;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
    auto it = worker_pids_.find(pid);
    if (it == worker_pids_.end()) continue;
    WorkerId id = it->second;
    worker_pids_.erase(it);
    auto w = workers_.find(id);
    if (w == workers_.end()) continue;
    std::string how = DescribeExit(status);
    if (w->second.state == State::kStarting) {
      if (Job* j = FindJob(w->second.job); j != nullptr) {
        j->start_failures++;
        if (!j->start_failure_final)
          j->last_start_failure = "a worker process " + how + " before it registered";
      }
    }
    PRISM_LOG_INFO("worker {} (pid {}) {}", id.Hex(), pid, how);
    exited(id, how);
  }
}

void WorkerPool::StopAll() {
  // Workers first get SIGTERM and a moment to go; then SIGKILL. (Workers under a launch prefix
  // are the prefix's children: they get the signals too.)
  std::vector<pid_t> prefixed;
  for (auto& [wid, w] : workers_) {
    if (w.process > 0 && w.process != w.pid) prefixed.push_back(w.process);
  }
  for (pid_t p : prefixed) ::kill(p, SIGTERM);
  for (auto& [pid, id] : worker_pids_) ::kill(pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!worker_pids_.empty() && std::chrono::steady_clock::now() < deadline) {
    int status;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      worker_pids_.erase(pid);
    } else if (pid < 0) {
      break;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  for (pid_t p : prefixed) ::kill(p, SIGKILL);
  for (auto& [pid, id] : worker_pids_) {
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
  }
  worker_pids_.clear();
  for (auto& [wid, w] : workers_) ::unlink(w.socket_path.c_str());
  workers_.clear();
  for (auto& [jid, job] : jobs_) {
    if (job.exe_fd >= 0) ::close(job.exe_fd);
  }
  jobs_.clear();
  if (self_exe_fd_ >= 0) ::close(self_exe_fd_);
  self_exe_fd_ = -1;
}

}  // namespace prism

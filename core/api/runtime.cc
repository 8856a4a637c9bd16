// The process-wide runtime behind prism::Init(): the one global of the runtime, as in Ray's API.
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <prism/gpu/context.h>
#include <prism/gpu/tensor.h>
#include <prism/gpu/topology.h>
#include <prism/prism.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "base/ids.h"
#include "base/logging.h"
#include "base/mutex.h"
#include "base/process_info.h"
#include "node/node_daemon.h"
#include "node/session.h"
#include "worker/core_worker.h"

extern char** environ;

#ifndef PRISM_RELATIVE_BINDIR
#define PRISM_RELATIVE_BINDIR "../bin"
#endif

namespace prism {
namespace {

struct Runtime {
  std::shared_ptr<CoreWorker> core;
  pid_t daemon_pid = -1;
  int lifeline_fd = -1;
};

Mutex g_mu;
Runtime g_rt;  // guarded by g_mu
std::atomic<uint64_t> g_generation{1};
bool g_atexit_registered = false;  // guarded by g_mu

std::shared_ptr<CoreWorker> Core() {
  MutexLock lock(g_mu);
  return g_rt.core;
}

std::shared_ptr<CoreWorker> RequireCore() {
  auto core = Core();
  if (!core) throw InvalidArgumentError("prism is not initialized: call prism::Init() first");
  return core;
}

// The prism tool installed next to this library (same relative layout in the build tree).
std::string DaemonBinary() {
  const char* env = std::getenv("PRISM_DAEMON_BIN");
  if (env != nullptr && *env != '\0') return env;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&DaemonBinary), &info) != 0 && info.dli_fname != nullptr) {
    std::filesystem::path lib = std::filesystem::weakly_canonical(info.dli_fname);
    std::filesystem::path bin = lib.parent_path() / PRISM_RELATIVE_BINDIR / "prism";
    if (std::filesystem::exists(bin)) return bin.lexically_normal().string();
  }
  return "prism";  // from PATH
}

std::string FormatUnits(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  return buf;
}

// Starts `prism start --head --block --embedded` as a child and waits until it listens.
void SpawnEmbeddedDaemon(const InitOptions& options, const SessionInfo& session, Runtime* rt) {
  int lifeline[2], ready[2];
  if (pipe2(lifeline, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0) {
    throw RuntimeError(std::string("cannot create pipes: ") + std::strerror(errno));
  }
  double cpus = options.num_cpus > 0 ? options.num_cpus
                                     : static_cast<double>(std::thread::hardware_concurrency());
  std::vector<std::string> args = {
      DaemonBinary(),   "start",         "--head", "--block",    "--embedded", "--session-dir",
      session.dir,      "--lifeline-fd", "3",      "--ready-fd", "4",          "--num-cpus",
      FormatUnits(cpus)};
  if (options.num_gpus < -1)
    throw InvalidArgumentError("InitOptions::num_gpus must be >= 0 (or -1: detect)");
  if (options.num_gpus >= 0) {
    args.push_back("--num-gpus");
    args.push_back(std::to_string(options.num_gpus));
  }
  if (!options.gpu_topology.empty()) {
    // Checked here too, so that a bad profile is this call's error rather than the daemon's.
    auto topology = gpu::Topology::Load(options.gpu_topology);
    if (!topology.ok())
      throw InvalidArgumentError("InitOptions::gpu_topology: " + topology.status().message());
    args.push_back("--gpu-topology");
    args.push_back(options.gpu_topology);
  }
  if (options.object_store_memory > 0) {
    args.push_back("--object-store-memory");
    args.push_back(std::to_string(options.object_store_memory));
  }
  if (options.object_store_prefault) args.push_back("--object-store-prefault");
  if (options.memory > 0) {
    args.push_back("--memory");
    args.push_back(std::to_string(options.memory));
  }
  for (const auto& [name, amount] : options.resources) {
    args.push_back("--resources");
    args.push_back(name + "=" + FormatUnits(amount));
  }
  if (!options.log_level.empty()) {
    args.push_back("--log-level");
    args.push_back(options.log_level);
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "PRISM_CLUSTER_TOKEN=", 20) != 0) env.emplace_back(*e);
  }
  env.push_back("PRISM_CLUSTER_TOKEN=" + session.token);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, lifeline[0], 3);
  posix_spawn_file_actions_adddup2(&fa, ready[1], 4);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = argv[0][0] == '/' ? posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data())
                             : posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(lifeline[0]);
  ::close(ready[1]);
  if (rc != 0) {
    ::close(lifeline[1]);
    ::close(ready[0]);
    throw RuntimeError("cannot start the node daemon (" + args[0] + "): " + std::strerror(rc) +
                       "; set PRISM_DAEMON_BIN to the prism tool");
  }
  pollfd p{ready[0], POLLIN, 0};
  int n = ::poll(&p, 1, 30000);
  // 'R' when ready; 'E' and the reason when it could not start.
  char answer[1024];
  ssize_t got = n == 1 ? ::read(ready[0], answer, sizeof(answer)) : 0;
  bool ok = got >= 1 && answer[0] == 'R';
  ::close(ready[0]);
  if (!ok) {
    ::close(lifeline[1]);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (got > 1 && answer[0] == 'E') {
      throw RuntimeError("the node daemon could not start: " +
                         std::string(answer + 1, static_cast<size_t>(got - 1)));
    }
    throw RuntimeError(
        n == 0 ? "the node daemon did not get ready within 30 s; it ran " + args[0]
               : "the node daemon failed to start (see its messages above); it ran " + args[0]);
  }
  rt->daemon_pid = pid;
  rt->lifeline_fd = lifeline[1];
}

void StopEmbeddedDaemon(Runtime* rt) {
  if (rt->lifeline_fd >= 0) ::close(rt->lifeline_fd);  // EOF: the daemon stops itself
  rt->lifeline_fd = -1;
  if (rt->daemon_pid <= 0) return;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(rt->daemon_pid, &status, WNOHANG);
    if (r != 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(rt->daemon_pid, SIGKILL);
      ::waitpid(rt->daemon_pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  rt->daemon_pid = -1;
}

[[noreturn]] void RunWorker(const InitOptions& options) {
  InitLogging("worker", options.log_level);
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  CoreWorkerOptions o;
  o.role = rpc::ROLE_WORKER;
  o.session_dir = env("PRISM_SESSION_DIR");
  o.daemon_socket = DaemonSocketPath(o.session_dir);
  o.token = env("PRISM_CLUSTER_TOKEN");
  o.worker_id = UniqueIdFromHex(env("PRISM_WORKER_ID"));
  o.job_id =
      JobIdFromInt(static_cast<uint32_t>(std::strtoul(env("PRISM_JOB_ID").c_str(), nullptr, 10)));
  o.build_id = SelfBuildId();
  o.runtime_generation = g_generation.load();
  auto core = CoreWorker::Start(std::move(o));
  if (!core.ok()) {
    std::fprintf(stderr, "prism worker %d cannot start: %s\n", getpid(),
                 core.status().ToString().c_str());
    std::fflush(stderr);
    _exit(1);
  }
  std::shared_ptr<CoreWorker> cw(std::move(*core));
  {
    MutexLock lock(g_mu);
    g_rt.core = cw;
  }
  cw->RunTaskLoop();
  cw->Shutdown();
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(0);
}

void ShutdownAtExit() { prism::Shutdown(); }

}  // namespace

std::shared_ptr<CoreWorker> CurrentCoreWorker() { return RequireCore(); }
std::shared_ptr<ProcessRuntime> CurrentRuntime() { return RequireCore(); }

bool IsWorkerProcess() {
  const char* mode = std::getenv("PRISM_WORKER_MODE");
  return mode != nullptr && std::strcmp(mode, "1") == 0;
}

void Init(const InitOptions& options) {
  if (IsWorkerProcess()) RunWorker(options);
  MutexLock lock(g_mu);
  if (g_rt.core) throw InvalidArgumentError("prism::Init() was already called in this process");
  InitLogging("driver", options.log_level);
  SessionInfo session;
  Runtime rt;
  if (options.address.empty()) {
    session.dir = NewSessionDir();
    session.token = NewClusterToken();
    SpawnEmbeddedDaemon(options, session, &rt);
  } else {
    auto resolved = ResolveSession(options.address);
    if (!resolved.ok()) throw RuntimeError(resolved.status().message());
    session = *resolved;
  }
  CoreWorkerOptions o;
  o.role = rpc::ROLE_DRIVER;
  o.session_dir = session.dir;
  o.daemon_socket = DaemonSocketPath(session.dir);
  o.token = session.token;
  o.worker_id = RandomUniqueId();
  o.build_id = SelfBuildId();
  o.worker_argv = options.worker_argv;
  o.worker_launch_prefix = options.worker_launch_prefix;
  o.timeline = options.timeline;
  if (o.worker_launch_prefix.empty()) {
    if (const char* p = std::getenv("PRISM_WORKER_LAUNCH_PREFIX"); p != nullptr) {
      std::istringstream words(p);
      for (std::string w; words >> w;) o.worker_launch_prefix.push_back(w);
    }
  }
  o.python_executable = options.python_executable;
  if (o.python_executable.empty()) {
    // "python3" on PATH, made absolute here (the daemon starts it without a PATH search).
    const char* path = std::getenv("PATH");
    std::string dirs = path == nullptr ? "/usr/local/bin:/usr/bin:/bin" : path;
    size_t at = 0;
    while (at <= dirs.size()) {
      size_t end = dirs.find(':', at);
      std::string dir = dirs.substr(at, end == std::string::npos ? std::string::npos : end - at);
      std::string candidate = (dir.empty() ? "." : dir) + "/python3";
      if (::access(candidate.c_str(), X_OK) == 0) {
        std::error_code ec;
        auto real = std::filesystem::canonical(candidate, ec);  // (pyenv shims are scripts)
        o.python_executable = ec ? candidate : real.string();
        break;
      }
      if (end == std::string::npos) break;
      at = end + 1;
    }
  }
  for (const auto& d : options.code_search_path) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(d, ec);
    o.code_search_path.push_back(ec ? d : abs.string());  // workers start elsewhere
  }
  o.runtime_generation = g_generation.load();
  Result<std::unique_ptr<CoreWorker>> core = Status::Internal("not started");
  try {
    core = CoreWorker::Start(std::move(o));
  } catch (const std::exception& e) {
    core = Status::Internal(e.what());
  }
  if (!core.ok()) {
    StopEmbeddedDaemon(&rt);
    throw RuntimeError("cannot connect to the node daemon: " + core.status().ToString());
  }
  rt.core = std::shared_ptr<CoreWorker>(std::move(*core));
  if (!options.gpu_topology.empty()) {
    // The driver's own sim devices (reading a tensor) are the node's.
    auto names = gpu::Topology::ProfileNames();
    bool shipped = std::find(names.begin(), names.end(), options.gpu_topology) != names.end();
    std::error_code ec;
    rt.core->gpu_tasks().SetTopology(
        shipped ? options.gpu_topology
                : std::filesystem::absolute(options.gpu_topology, ec).string());
  }
  g_rt = std::move(rt);
  if (!g_atexit_registered) {
    std::atexit(ShutdownAtExit);
    g_atexit_registered = true;
  }
}

void Shutdown() {
  Runtime rt;
  {
    MutexLock lock(g_mu);
    rt = std::move(g_rt);
    g_rt = Runtime{};
    g_generation++;
  }
  if (rt.core) rt.core->Shutdown();
  rt.core.reset();
  StopEmbeddedDaemon(&rt);
}

bool IsInitialized() { return Core() != nullptr; }

RuntimeStats GetRuntimeStats() { return RequireCore()->stats(); }

ObjectStoreStats GetObjectStoreStats() { return RequireCore()->object_store_stats(); }

PlacementGroup CreatePlacementGroup(const PlacementGroupOptions& options) {
  return RequireCore()->CreatePlacementGroup(options);
}

void RemovePlacementGroup(const PlacementGroup& group) {
  if (!group.valid()) throw InvalidArgumentError("RemovePlacementGroup of an empty PlacementGroup");
  RequireCore()->RemovePlacementGroup(group.id());
}

PlacementGroup GetPlacementGroup(const std::string& name) {
  return RequireCore()->GetPlacementGroup(name);
}

bool PlacementGroup::Wait(std::chrono::milliseconds timeout) const {
  if (!valid()) throw InvalidArgumentError("Wait on an empty PlacementGroup");
  return RequireCore()->WaitPlacementGroup(id_, timeout);
}

std::vector<NodeInfo> Nodes() { return RequireCore()->Nodes(); }

std::string GetNodeId() { return RequireCore()->RuntimeContext().node_id; }

std::map<std::string, double> ClusterResources() {
  std::map<std::string, double> out;
  for (const auto& n : Nodes()) {
    if (!n.alive) continue;
    for (const auto& [k, v] : n.resources) out[k] += v;
  }
  return out;
}

std::map<std::string, double> AvailableResources() {
  std::map<std::string, double> out;
  for (const auto& n : Nodes()) {
    if (!n.alive) continue;
    for (const auto& [k, v] : n.available) {
      if (v > 0) out[k] += v;
    }
  }
  return out;
}

gpu::Context& gpu::CurrentContext() { return RequireCore()->CurrentGpuContext(); }
std::string gpu::internal::PackTensor(const gpu::Tensor& t) {
  return RequireCore()->gpu_tasks().PackTensor(t);
}
gpu::Tensor gpu::internal::UnpackTensor(std::string_view d) {
  return RequireCore()->gpu_tasks().UnpackTensor(d);
}

void WriteTimeline(const std::string& path) {
  Status st = WriteChromeTrace(RequireCore()->session_dir(), path);
  if (!st.ok()) throw RuntimeError(st.message());
}

std::vector<int> GetGpuIds() {
  auto core = Core();
  return core ? core->GpuIds() : std::vector<int>{};
}

namespace internal {

std::string ToolPath() { return DaemonBinary(); }

RefHandle::~RefHandle() {
  if (generation_ != g_generation.load(std::memory_order_relaxed)) return;
  auto core = Core();
  if (core) core->ReleaseRef(id_);
}

void CheckInitialized() { RequireCore(); }

RefPtr SubmitTask(const std::string& function, std::vector<SerializedArg> args,
                  const TaskOptions& options) {
  return RequireCore()->SubmitTask(function, std::move(args), options);
}

RefPtr Put(const EncodedValue& value) { return RequireCore()->Put(value); }

SerializedArg MakeArg(EncodedValue value) {
  if (value.size > kMaxInlineBytes) return SerializedArg{Put(value), {}, {}};
  std::string bytes = value.ToString();
  return SerializedArg{nullptr, std::move(bytes), std::move(value.nested)};
}

ActorRef CreateActor(const std::string& factory, std::vector<SerializedArg> args,
                     const ActorOptions& options) {
  return RequireCore()->CreateActor(factory, std::move(args), options);
}

RefPtr SubmitActorTask(const ActorRef& actor, const std::string& method,
                       std::vector<SerializedArg> args) {
  return RequireCore()->SubmitActorTask(actor, method, std::move(args));
}

void KillActor(const ActorId& id, bool no_restart) { RequireCore()->KillActor(id, no_restart); }

std::shared_ptr<StreamHandle> SubmitStreamingTask(const std::string& function,
                                                  std::vector<SerializedArg> args,
                                                  const TaskOptions& options) {
  return RequireCore()->SubmitStreamingTask(function, std::move(args), options);
}

void StreamWrite(const EncodedValue& value) { RequireCore()->StreamWrite(value); }

void CancelTask(const RefHandle& ref, bool force) { RequireCore()->CancelTask(ref, force); }

ActorRef GetActorByName(const std::string& name, const std::string& ray_namespace) {
  return RequireCore()->GetActorByName(name, ray_namespace);
}

bool InObjectStore(const void* p, size_t n) {
  auto core = Core();
  return core && core->InObjectStore(p, n);
}

RefPtr MakeRef(const ObjectId& id, OwnerAddress owner) {
  return RequireCore()->MakeRef(id, std::move(owner));
}

std::vector<EncodedView> GetEncoded(const std::vector<const RefHandle*>& refs, int64_t timeout_ms) {
  return RequireCore()->Get(refs, timeout_ms);
}

bool RebuildLost(const RefHandle& ref) { return RequireCore()->RebuildLost(ref); }

std::vector<bool> WaitReady(const std::vector<const RefHandle*>& refs, size_t num_returns,
                            int64_t timeout_ms) {
  return RequireCore()->Wait(refs, num_returns, timeout_ms);
}

}  // namespace internal
}  // namespace prism

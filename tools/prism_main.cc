// The prism command-line tool: start, stop and inspect node daemons.
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <prism/gpu/topology.h>
#include <prism/prism.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "base/logging.h"
#include "node/node_daemon.h"
#include "node/session.h"
#include "object_store/object_store.h"
#include "rpc/blocking_client.h"
#include "rpc/connection.h"
#include "worker/timeline.h"

namespace {

struct StartArgs {
  bool head = false;
  bool block = false;
  bool embedded = false;
  std::string address;
  std::string session_dir;
  int lifeline_fd = -1;
  int ready_fd = -1;
  double num_cpus = 0;
  int num_gpus = -1;
  std::string gpu_topology;
  std::vector<std::string> resources;
  std::string log_level;
  int hello_timeout_ms = 10000;
  uint64_t object_store_memory = 0;
  bool object_store_prefault = false;
  uint64_t memory = 0;
};

prism::Result<prism::ResourceSet> ParseResources(const StartArgs& a) {
  std::map<std::string, double> units;
  units[prism::kCpu] =
      a.num_cpus > 0 ? a.num_cpus : static_cast<double>(std::thread::hardware_concurrency());
  for (const auto& r : a.resources) {
    auto eq = r.find('=');
    if (eq == std::string::npos || eq == 0) {
      return prism::Status::InvalidArgument("--resources takes NAME=AMOUNT, not '" + r + "'");
    }
    char* end = nullptr;
    std::string num = r.substr(eq + 1);
    double v = std::strtod(num.c_str(), &end);
    if (end == num.c_str() || *end != '\0') {
      return prism::Status::InvalidArgument("--resources: '" + num + "' is not a number");
    }
    units[r.substr(0, eq)] = v;
  }
  if (units.count(prism::kMemory) > 0) {
    return prism::Status::InvalidArgument("set memory with --memory, not --resources memory=...");
  }
  if (units.count(prism::kGpu) > 0) {
    return prism::Status::InvalidArgument("set GPUs with --num-gpus, not --resources GPU=...");
  }
  if (a.num_gpus < -1) return prism::Status::InvalidArgument("--num-gpus must be >= 0");
  if (a.num_gpus > 0) units[prism::kGpu] = a.num_gpus;
  uint64_t memory = a.memory;
  if (memory == 0) {
    // The machine's memory less what the object store may take.
    uint64_t store =
        a.object_store_memory > 0 ? a.object_store_memory : prism::DefaultObjectStoreCapacity();
    long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    uint64_t total = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
    memory = total > store ? total - store : 0;
  }
  if (memory > 0) units[prism::kMemory] = static_cast<double>(memory);
  return prism::ResourceSet::FromUnits(units);
}

struct ResolvedTopology {
  std::optional<prism::gpu::Topology> topology;
  std::string spec;  // how workers load it: a profile name or an absolute path; empty if discovered
};

// The node's GPU topology: `spec` (a profile or file), else $PRISM_GPU_TOPOLOGY, else (when
// GPUs are wanted) what NVML finds; none without a driver.
prism::Result<ResolvedTopology> ResolveTopology(std::string spec, bool discover) {
  ResolvedTopology out;
  if (spec.empty()) {
    if (const char* e = std::getenv("PRISM_GPU_TOPOLOGY"); e != nullptr) spec = e;
  }
  if (!spec.empty()) {
    PRISM_ASSIGN_OR_RETURN(out.topology, prism::gpu::Topology::Load(spec));
    auto names = prism::gpu::Topology::ProfileNames();
    bool shipped = std::find(names.begin(), names.end(), spec) != names.end();
    out.spec = shipped ? spec : std::filesystem::absolute(spec).string();
    return out;
  }
  if (discover) {
    auto found = prism::gpu::Topology::Discover();
    if (found.ok()) out.topology = std::move(found).value();
  }
  return out;
}

int Topology(const std::string& spec, bool json) {
  auto t = ResolveTopology(spec, true);
  if (!t.ok()) {
    std::cerr << "prism topology: " << t.status().message() << "\n";
    return 1;
  }
  if (!t->topology) {
    std::string names;
    for (const auto& n : prism::gpu::Topology::ProfileNames())
      names += (names.empty() ? "" : ", ") + n;
    std::cerr << "prism topology: no GPUs found (no NVIDIA driver here); show a profile with "
                 "--profile NAME ("
              << names << ") or a JSON file\n";
    return 1;
  }
  std::cout << (json ? t->topology->ToJson() : t->topology->Matrix());
  return 0;
}

int Start(const StartArgs& a) {
  if (!a.head) {
    std::cerr << "prism start: only --head is supported by this version (one node per cluster); "
                 "joining a head with --address comes with multi-node clusters\n";
    return 2;
  }
  auto topology = ResolveTopology(a.gpu_topology, a.num_gpus != 0);
  if (!topology.ok()) {
    std::cerr << "prism start: " << topology.status().message() << "\n";
    return 2;
  }
  StartArgs effective = a;
  if (topology->topology) {
    int have = topology->topology->gpu_count();
    if (a.num_gpus > have) {
      std::cerr << "prism start: --num-gpus " << a.num_gpus << " but the GPU topology has " << have
                << "\n";
      return 2;
    }
    if (a.num_gpus < 0) effective.num_gpus = have;
  }
  auto resources = ParseResources(effective);
  if (!resources.ok()) {
    std::cerr << "prism start: " << resources.status().message() << "\n";
    return 2;
  }
  prism::NodeDaemonConfig config;
  config.gpu_topology = std::move(topology->topology);
  config.gpu_topology_spec = topology->spec;
  config.session_dir = a.session_dir.empty() ? prism::NewSessionDir() : a.session_dir;
  config.resources = *resources;
  config.lifeline_fd = a.lifeline_fd;
  config.ready_fd = a.ready_fd;
  config.log_level = a.log_level;
  config.hello_timeout = std::chrono::milliseconds(a.hello_timeout_ms);
  config.object_store_memory = a.object_store_memory;
  config.object_store_prefault = a.object_store_prefault;
  if (a.embedded) {
    const char* token = std::getenv("PRISM_CLUSTER_TOKEN");
    if (token == nullptr || *token == '\0') {
      std::cerr << "prism start --embedded: PRISM_CLUSTER_TOKEN is not set\n";
      return 2;
    }
    config.token = token;
    config.fixed_size = true;
    config.remove_session_dir = true;
    unsetenv("PRISM_CLUSTER_TOKEN");
    return prism::RunNodeDaemon(std::move(config));
  }
  // A standalone daemon: it may gain nodes later, so infeasible requests wait.
  config.token = prism::NewClusterToken();
  config.fixed_size = false;
  config.remove_session_dir = false;  // keeps daemon.log; sockets and token go on stop
  std::error_code ec;
  std::filesystem::create_directories(config.session_dir, ec);
  ::chmod(config.session_dir.c_str(), 0700);
  ::chmod(prism::SessionRoot().c_str(), 0700);
  auto published = prism::PublishSession({config.session_dir, config.token});
  if (!published.ok()) {
    std::cerr << "prism start: " << published.message() << "\n";
    return 1;
  }
  if (a.block) {
    int rc = prism::RunNodeDaemon(config);
    prism::UnpublishSession(config.session_dir);
    return rc;
  }
  int ready[2];
  if (pipe(ready) != 0) return 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    ::close(ready[0]);
    setsid();
    // The daemon's messages, and its workers' output, go to the session's log.
    int devnull = ::open("/dev/null", O_RDONLY);
    std::string log_path = config.session_dir + "/daemon.log";
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    dup2(devnull, 0);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    config.ready_fd = ready[1];
    int rc = prism::RunNodeDaemon(config);
    prism::UnpublishSession(config.session_dir);
    _exit(rc);
  }
  ::close(ready[1]);
  pollfd p{ready[0], POLLIN, 0};
  char answer[1024];
  ssize_t got = ::poll(&p, 1, 30000) == 1 ? ::read(ready[0], answer, sizeof(answer)) : 0;
  if (got < 1 || answer[0] != 'R') {
    if (got > 1 && answer[0] == 'E') {
      std::cerr << "prism start: the daemon could not start: "
                << std::string(answer + 1, size_t(got - 1)) << "\n";
    } else {
      std::cerr << "prism start: the daemon did not come up (see " << config.session_dir
                << "/daemon.log)\n";
    }
    return 1;
  }
  std::cout
      << "prism: node daemon started (pid " << pid << ")\n"
      << "  session: " << config.session_dir << " (log: daemon.log there)\n"
      << "  connect a driver with prism::Init({.address = \"auto\"}); stop with `prism stop`\n";
  return 0;
}

prism::Result<prism::rpc::BlockingClient> ConnectClient(const std::string& address,
                                                        prism::SessionInfo* session) {
  auto s = prism::ResolveSession(address);
  if (!s.ok()) return s.status();
  *session = *s;
  return prism::rpc::BlockingClient::ConnectAndHello(
      prism::DaemonSocketPath(s->dir), prism::rpc::MakeHello(prism::rpc::ROLE_CLIENT, s->token));
}

int Timeline(const std::string& address, const std::string& out) {
  auto s = prism::ResolveSession(address);
  if (!s.ok()) {
    std::cerr << "prism timeline: " << s.status().message() << "\n";
    return 1;
  }
  prism::Status st = prism::WriteChromeTrace(s->dir, out);
  if (!st.ok()) {
    std::cerr << "prism timeline: " << st.message() << "\n";
    return 1;
  }
  std::cout << "prism: wrote " << out
            << " (open it in https://ui.perfetto.dev or chrome://tracing)\n";
  return 0;
}

double Units(int64_t milli) { return static_cast<double>(milli) / prism::kMilli; }

int Status(const std::string& address) {
  prism::SessionInfo session;
  auto c = ConnectClient(address, &session);
  if (!c.ok()) {
    std::cerr << "prism status: " << c.status().message() << "\n";
    return 1;
  }
  prism::rpc::Envelope req;
  req.mutable_status_request()->set_request_id(1);
  auto st = c->Send(req);
  auto reply = c->Receive(10000);
  if (!st.ok() || !reply.ok() || !reply->has_status_reply()) {
    std::cerr << "prism status: no answer from the daemon\n";
    return 1;
  }
  const auto& s = reply->status_reply();
  std::printf("node %s (pid %d)\n  session %s\n",
              prism::NodeId::FromBinary(s.node_id()).Hex().c_str(), s.pid(), session.dir.c_str());
  std::printf("  %-16s %10s %10s %10s\n", "resource", "total", "used", "free");
  for (const auto& r : s.resources()) {
    if (r.name() == prism::kMemory) {  // bytes: shown in GiB
      auto gib = [](int64_t milli) { return Units(milli) / double(1 << 30); };
      std::printf("  %-16s %10.3f %10.3f %10.3f\n", "memory (GiB)", gib(r.total_milli()),
                  gib(r.total_milli() - r.available_milli()), gib(r.available_milli()));
      continue;
    }
    std::printf("  %-16s %10.3f %10.3f %10.3f\n", r.name().c_str(), Units(r.total_milli()),
                Units(r.total_milli() - r.available_milli()), Units(r.available_milli()));
    for (const auto& d : r.instances()) {
      std::string label = r.name() + " " + std::to_string(d.index());
      std::printf("    %-14s %10.3f %10.3f %10.3f\n", label.c_str(), Units(d.total_milli()),
                  Units(d.total_milli() - d.available_milli()), Units(d.available_milli()));
    }
  }
  std::printf("  workers: %u alive, %u idle, %llu started in all\n", s.workers_alive(),
              s.workers_idle(), static_cast<unsigned long long>(s.workers_started_total()));
  std::printf("  leases: %u active, %llu granted in all, %u requests waiting\n", s.leases_active(),
              static_cast<unsigned long long>(s.leases_granted_total()),
              s.pending_lease_requests());
  std::printf("  drivers: %u\n", s.drivers());
  for (const auto& d : s.infeasible()) {
    std::printf("  infeasible demand: %u request(s) for {%s}, which no node has\n", d.count(),
                d.shape().c_str());
  }
  int alive = 0, dead = 0;
  for (const auto& a : s.actors()) (a.state() == prism::rpc::ACTOR_DEAD ? dead : alive)++;
  std::printf("  actors: %d alive or starting, %d dead\n", alive, dead);
  for (const auto& a : s.actors()) {
    if (a.state() == prism::rpc::ACTOR_DEAD) continue;
    std::printf("    %s %-16s %-10s pid %d, %u restart(s)%s\n",
                prism::ActorId::FromBinary(a.actor_id()).Hex().substr(0, 12).c_str(),
                a.name().empty() ? "(unnamed)" : a.name().c_str(),
                prism::rpc::ActorState_Name(a.state()).substr(6).c_str(), a.pid(), a.num_restarts(),
                a.detached() ? ", detached" : "");
  }
  if (s.placement_groups_size() > 0)
    std::printf("  placement groups: %d\n", s.placement_groups_size());
  for (const auto& g : s.placement_groups()) {
    std::string bundles;
    for (const auto& b : g.bundles()) {
      std::string one;
      for (const auto& r : b.resources()) {
        char amount[64];
        std::snprintf(amount, sizeof(amount), "%g", Units(r.milli()));
        one += (one.empty() ? "" : ",") + r.name() + "=" + amount;
      }
      for (const auto& d : b.devices()) {
        one += " on " + d.resource() + " " + std::to_string(d.index());
      }
      bundles += " {" + one + "}";
    }
    std::printf("    %llu %-16s %-8s %s%s\n", static_cast<unsigned long long>(g.id()),
                g.name().empty() ? "(unnamed)" : g.name().c_str(),
                prism::rpc::PlacementGroupState_Name(g.state()).substr(3).c_str(),
                prism::rpc::PlacementStrategy_Name(g.strategy()).substr(10).c_str(),
                bundles.c_str());
  }
  const auto& o = s.store();
  auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  std::printf(
      "  object store: %.1f MiB capacity, %.1f MiB used, %.1f MiB pinned, %.1f MiB spilled\n",
      mib(o.capacity()), mib(o.used()), mib(o.pinned()), mib(o.spilled()));
  std::printf("    %llu objects (%llu on disk), %llu spills and %llu restores in all\n",
              static_cast<unsigned long long>(o.num_objects()),
              static_cast<unsigned long long>(o.num_spilled()),
              static_cast<unsigned long long>(o.spills_total()),
              static_cast<unsigned long long>(o.restores_total()));
  return 0;
}

// The generic C++ worker: loads every shared library of the code search path (their
// PRISM_REMOTE registrations run as they load), then becomes a worker; Init() never returns.
int RunGenericWorker(const std::vector<std::string>& dirs) {
  if (!prism::IsWorkerProcess()) {
    std::cerr << "prism worker: this is started by a node daemon for tasks with runtime \"cpp\"\n";
    return 2;
  }
  for (const auto& dir : dirs) {
    std::error_code ec;
    std::vector<std::filesystem::path> libs;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".so") libs.push_back(e.path());
    }
    if (ec) std::cerr << "prism worker: cannot read " << dir << ": " << ec.message() << "\n";
    std::sort(libs.begin(), libs.end());
    for (const auto& lib : libs) {
      if (::dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        std::cerr << "prism worker: cannot load " << lib.string() << ": " << ::dlerror() << "\n";
      }
    }
  }
  prism::Init();  // the worker loop
  return 0;
}

int Stop(const std::string& address) {
  prism::SessionInfo session;
  auto c = ConnectClient(address, &session);
  if (!c.ok()) {
    std::cerr << "prism stop: " << c.status().message() << "\n";
    return 1;
  }
  prism::rpc::Envelope req;
  req.mutable_stop_request()->set_request_id(1);
  if (!c->Send(req).ok()) return 1;
  // The daemon closes every connection as it stops.
  while (true) {
    auto r = c->Receive(15000);
    if (!r.ok()) break;
  }
  for (int i = 0; i < 300 && std::filesystem::exists(prism::DaemonSocketPath(session.dir)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  prism::UnpublishSession(session.dir);
  std::cout << "prism: stopped the daemon of " << session.dir << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prism: start, stop and inspect prism node daemons"};
  app.require_subcommand(1);
  StartArgs start;
  auto* s = app.add_subcommand("start", "start a node daemon");
  s->add_flag("--head", start.head, "start the head node (with the control store)");
  s->add_flag("--block", start.block, "stay in the foreground");
  s->add_flag("--embedded", start.embedded, "started by a driver's prism::Init() (internal)")
      ->group("");
  s->add_option("--address", start.address, "join the cluster of this head (multi-node)");
  s->add_option("--session-dir", start.session_dir, "session folder (default: a new one)");
  s->add_option("--lifeline-fd", start.lifeline_fd, "stop when this fd reaches EOF (internal)")
      ->group("");
  s->add_option("--ready-fd", start.ready_fd, "write one byte here when ready (internal)")
      ->group("");
  s->add_option("--num-cpus", start.num_cpus, "CPUs to offer (default: hardware threads)");
  s->add_option(
      "--num-gpus", start.num_gpus,
      "GPUs to offer, as device instances 0..N-1 (default: those of the GPU topology, or none)");
  s->add_option(
      "--gpu-topology", start.gpu_topology,
      "the node's GPU topology: a shipped profile or a JSON file (default: $PRISM_GPU_TOPOLOGY, "
      "or discovered through NVML)");
  s->add_option("--resources", start.resources, "custom resources, NAME=AMOUNT (repeatable)");
  s->add_option("--log-level", start.log_level, "trace, debug, info, warn, error or off");
  s->add_option(
       "--memory", start.memory,
       "bytes of memory to offer tasks and actors that reserve some (default: the machine's "
       "memory less the object store)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 50));
  s->add_option(
       "--object-store-memory", start.object_store_memory,
       "bytes of shared memory for the object store (default: 30% of the machine's memory, or of "
       "the cgroup's memory limit)")
      ->check(CLI::Range(uint64_t{4096}, uint64_t{1} << 50));
  s->add_flag(
      "--object-store-prefault", start.object_store_prefault,
      "allocate the object store's memory at start, so that puts never wait for fresh pages "
      "(the memory is taken for good; off by default)");
  s->add_option("--hello-timeout-ms", start.hello_timeout_ms,
                "close connections that send no Hello within this time")
      ->check(CLI::Range(1, 3600000));
  std::string address = "auto";
  auto* st =
      app.add_subcommand("status", "show a daemon's resources, workers, leases and object store");
  st->add_option("--address", address, "session folder, or auto");
  auto* sp = app.add_subcommand("stop", "stop a standalone daemon");
  sp->add_option("--address", address, "session folder, or auto");
  std::vector<std::string> code_search_path;
  auto* wk = app.add_subcommand("worker",
                                "the generic C++ worker (started by a node daemon, not by hand)");
  wk->add_option("--code-search-path", code_search_path,
                 "a folder of shared libraries to load (repeatable)");
  std::string profile;
  bool topo_json = false;
  auto* tp = app.add_subcommand(
      "topology", "print the GPU topology matrix (like nvidia-smi topo -m), with bandwidths");
  tp->add_option(
      "--profile", profile,
      "a shipped profile or a JSON file (default: $PRISM_GPU_TOPOLOGY, or this machine)");
  tp->add_flag("--json", topo_json, "print the profile JSON instead");
  std::string trace_out = "prism-timeline.json";
  auto* tl =
      app.add_subcommand("timeline",
                         "write the task events workers recorded (start with PRISM_TIMELINE=1 or "
                         "InitOptions::timeline) as a Chrome trace for Perfetto");
  tl->add_option("--address", address, "session folder, or auto");
  tl->add_option("-o,--output", trace_out, "the trace file to write");
  CLI11_PARSE(app, argc, argv);
  if (tp->parsed()) return Topology(profile, topo_json);
  if (tl->parsed()) return Timeline(address, trace_out);
  if (wk->parsed()) return RunGenericWorker(code_search_path);
  if (s->parsed()) {
    if (!start.address.empty()) start.head = false;
    return Start(start);
  }
  if (st->parsed()) return Status(address);
  if (sp->parsed()) return Stop(address);
  return 0;
}

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
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "base/logging.h"
#include "control/control_server.h"
#include "node/node_daemon.h"
#include "node/session.h"
#include "object_store/object_store.h"
#include "rpc/blocking_client.h"
#include "rpc/connection.h"
#include "rpc/grpc_channel.h"
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
  // The cluster.
  int port = -1;  // -1: the default (6379 on the head, a free one on other nodes)
  std::string node_ip;
  std::string labels;
  std::string token;
  std::string token_file;
  int heartbeat_ms = 500;
  int node_dead_after_ms = 5000;
};

constexpr int kDefaultHeadPort = 6379;

// "k=v,k2=v2" as labels.
prism::Result<std::map<std::string, std::string>> ParseLabels(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t comma = text.find(',', at);
    std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? text.size() : comma + 1;
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return prism::Status::InvalidArgument("--labels takes KEY=VALUE,..., not '" + item + "'");
    }
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

// The token a joining node (or a tool) presents: --token, $PRISM_AUTH_TOKEN, --token-file, or
// that of a node of this machine in the same cluster.
prism::Result<std::string> ResolveToken(const std::string& flag, const std::string& file,
                                        const std::string& cluster_address) {
  if (!flag.empty()) return flag;
  if (const char* e = std::getenv("PRISM_AUTH_TOKEN"); e != nullptr && *e != '\0')
    return std::string(e);
  if (!file.empty()) {
    std::ifstream in(file);
    std::string token;
    if (!in || !(in >> token)) return prism::Status::NotFound("cannot read a token from " + file);
    return token;
  }
  auto local = prism::LocalClusterToken(cluster_address);
  if (local.ok()) return local;
  return prism::Status::NotFound(
      "no cluster token: pass --token (printed by `prism start --head`), "
      "set PRISM_AUTH_TOKEN, or give --token-file");
}

prism::Result<prism::ResourceSet> ParseResources(const StartArgs& a) {
  std::map<std::string, double> units;
  units[prism::kCpu] =
      a.num_cpus > 0 ? a.num_cpus : static_cast<double>(std::thread::hardware_concurrency());
  for (const auto& r : a.resources) {
    if (!r.empty() && r.front() == '{') {  // Ray's form: a JSON object of names and amounts
      auto j = nlohmann::json::parse(r, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) {
        return prism::Status::InvalidArgument("--resources: '" + r + "' is not a JSON object");
      }
      for (const auto& [name, v] : j.items()) {
        if (!v.is_number()) {
          return prism::Status::InvalidArgument("--resources: '" + name + "' is not a number");
        }
        units[name] = v.get<double>();
      }
      continue;
    }
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
  if (!a.head && a.address.empty() && !a.embedded) {
    std::cerr << "prism start: give --head (start a cluster) or --address IP:PORT (join one)\n";
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
  config.fixed_size = false;
  config.remove_session_dir = false;  // keeps daemon.log; sockets and token go on stop
  auto labels = ParseLabels(a.labels);
  if (!labels.ok()) {
    std::cerr << "prism start: " << labels.status().message() << "\n";
    return 2;
  }
  config.cluster.labels = *labels;
  config.cluster.node_ip = a.node_ip.empty() ? prism::DefaultNodeIp() : a.node_ip;
  config.cluster.port = a.port >= 0 ? a.port : (a.head ? kDefaultHeadPort : 0);
  config.cluster.heartbeat_period = std::chrono::milliseconds(a.heartbeat_ms);
  config.cluster.node_dead_after = std::chrono::milliseconds(a.node_dead_after_ms);
  if (a.head) {
    config.token = prism::NewClusterToken();
  } else {
    auto head = prism::rpc::ParseHostPort(a.address);
    if (!head.ok()) {
      std::cerr << "prism start --address: " << head.status().message() << "\n";
      return 2;
    }
    auto token = ResolveToken(a.token, a.token_file, head->ToString());
    if (!token.ok()) {
      std::cerr << "prism start: " << token.status().message() << "\n";
      return 2;
    }
    config.token = *token;
    config.cluster.head_address = head->ToString();
  }
  config.cluster.token = config.token;
  std::error_code ec;
  std::filesystem::create_directories(config.session_dir, ec);
  ::chmod(config.session_dir.c_str(), 0700);
  ::chmod(prism::SessionRoot().c_str(), 0700);
  // The head is what "auto" finds; a node joining a cluster only where this machine has none.
  bool make_current = a.head || !prism::HasCurrentSession();
  auto published = prism::PublishSession({config.session_dir, config.token}, make_current);
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
  std::string cluster = prism::SessionClusterAddress(config.session_dir);
  if (a.head) {
    std::cout << "prism: head node started (pid " << pid << ")\n"
              << "  cluster address: " << cluster << "\n"
              << "  session: " << config.session_dir << " (log: daemon.log there)\n\n"
              << "  join a node to this cluster (on any machine that reaches " << cluster << "):\n"
              << "    prism start --address " << cluster << " --token " << config.token << "\n"
              << "  connect a driver on this machine: prism::Init({.address = \"auto\"}) or\n"
              << "    prism.init(address=\"auto\"); elsewhere, on a node of the cluster, the same\n"
              << "  show the cluster: prism status; stop this machine's nodes: prism stop\n";
  } else {
    std::cout << "prism: node started (pid " << pid << ") and joined the cluster at " << cluster
              << "\n"
              << "  session: " << config.session_dir << " (log: daemon.log there)\n"
              << "  show the cluster: prism status; stop this machine's nodes: prism stop\n";
  }
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

// The cluster's nodes, one block each.
void PrintNodes(const std::string& cluster,
                const google::protobuf::RepeatedPtrField<prism::rpc::NodeInfo>& nodes) {
  int alive = 0;
  for (const auto& n : nodes) alive += n.state() == prism::rpc::NODE_ALIVE ? 1 : 0;
  std::printf("cluster %s: %d node(s) alive, %d dead\n", cluster.c_str(), alive,
              nodes.size() - alive);
  for (const auto& n : nodes) {
    std::string where = n.port() > 0 ? prism::rpc::HostPort{n.ip(), n.port()}.ToString() : n.ip();
    std::printf("  node %s %s %s%s (host %s, pid %d)\n",
                prism::NodeId::FromBinary(n.node_id()).Hex().substr(0, 12).c_str(), where.c_str(),
                n.state() == prism::rpc::NODE_ALIVE ? "ALIVE" : "DEAD", n.is_head() ? " head" : "",
                n.hostname().c_str(), n.pid());
    if (n.state() != prism::rpc::NODE_ALIVE) {
      std::printf("    died: %s\n", n.death_cause().c_str());
      continue;
    }
    std::map<std::string, int64_t> free;
    for (const auto& r : n.available()) free[r.name()] = r.milli();
    std::string line;
    for (const auto& r : n.total()) {
      char buf[128];
      if (r.name() == prism::kMemory) {
        std::snprintf(buf, sizeof(buf), "memory %.1f/%.1f GiB", Units(free[r.name()]) / (1 << 30),
                      Units(r.milli()) / (1 << 30));
      } else {
        std::snprintf(buf, sizeof(buf), "%s %g/%g", r.name().c_str(), Units(free[r.name()]),
                      Units(r.milli()));
      }
      line += (line.empty() ? "" : ", ") + std::string(buf);
    }
    std::printf("    free: %s; object store %.1f/%.1f MiB used\n", line.c_str(),
                static_cast<double>(n.object_store_used()) / (1 << 20),
                static_cast<double>(n.object_store_capacity()) / (1 << 20));
    if (!n.labels().empty()) {
      std::map<std::string, std::string> sorted(n.labels().begin(), n.labels().end());
      std::string labels;
      for (const auto& [k, v] : sorted) labels += (labels.empty() ? "" : ",") + k + "=" + v;
      std::printf("    labels: %s\n", labels.c_str());
    }
  }
}

// The cluster's nodes as JSON (`prism status --json`): one object per node.
void PrintNodesJson(const std::string& cluster,
                    const google::protobuf::RepeatedPtrField<prism::rpc::NodeInfo>& nodes) {
  nlohmann::json out;
  out["cluster_address"] = cluster;
  out["nodes"] = nlohmann::json::array();
  for (const auto& n : nodes) {
    nlohmann::json j;
    j["node_id"] = prism::NodeId::FromBinary(n.node_id()).Hex();
    j["alive"] = n.state() == prism::rpc::NODE_ALIVE;
    j["is_head"] = n.is_head();
    j["ip"] = n.ip();
    j["port"] = n.port();
    j["hostname"] = n.hostname();
    j["pid"] = n.pid();
    j["session_dir"] = n.session_dir();
    j["death_cause"] = n.death_cause();
    j["labels"] = nlohmann::json::object();
    for (const auto& [k, v] : n.labels()) j["labels"][k] = v;
    j["resources"] = nlohmann::json::object();
    for (const auto& r : n.total()) j["resources"][r.name()] = Units(r.milli());
    j["available"] = nlohmann::json::object();
    for (const auto& r : n.available()) j["available"][r.name()] = Units(r.milli());
    j["object_store_capacity"] = n.object_store_capacity();
    j["object_store_used"] = n.object_store_used();
    out["nodes"].push_back(std::move(j));
  }
  std::cout << out.dump(2) << "\n";
}

// `prism status --address IP:PORT`: the cluster's nodes, from its head.
int RemoteStatus(const prism::rpc::HostPort& head, const std::string& token_flag,
                 const std::string& token_file, bool json) {
  auto token = ResolveToken(token_flag, token_file, head.ToString());
  if (!token.ok()) {
    std::cerr << "prism status: " << token.status().message() << "\n";
    return 1;
  }
  prism::RemoteControl control(head.ToString(), *token, std::chrono::milliseconds(5000));
  prism::rpc::ListNodesReply reply;
  prism::Status st = control.ListNodes(&reply);
  if (!st.ok()) {
    std::cerr << "prism status: " << st.message() << "\n";
    return 1;
  }
  if (json) {
    PrintNodesJson(head.ToString(), reply.nodes());
  } else {
    PrintNodes(head.ToString(), reply.nodes());
  }
  return 0;
}

int Status(const std::string& address, const std::string& token, const std::string& token_file,
           bool json) {
  if (auto head = prism::rpc::ParseHostPort(address);
      head.ok() && !std::filesystem::is_directory(address)) {
    return RemoteStatus(*head, token, token_file, json);
  }
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
  if (json) {
    PrintNodesJson(s.cluster_address(), s.nodes());
    return 0;
  }
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
  if (!s.cluster_address().empty()) {
    std::printf("\n");
    PrintNodes(s.cluster_address(), s.nodes());
  }
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

int StopOne(const std::string& dir) {
  prism::SessionInfo session;
  auto c = ConnectClient(dir, &session);
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
  std::cout << "prism: stopped the node of " << session.dir << "\n";
  return 0;
}

// `prism stop`: every node of this machine (the one "auto" finds last); or the one named.
int Stop(const std::string& address) {
  if (address != "auto" && !address.empty()) return StopOne(address);
  auto sessions = prism::LocalSessions();
  if (sessions.empty()) {
    std::cerr << "prism stop: no running prism node was found on this machine\n";
    return 1;
  }
  int rc = 0;
  for (const auto& s : sessions) rc |= StopOne(s.dir);
  return rc;
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
  s->add_option("--address", start.address, "join the cluster of the head at IP:PORT");
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
  s->add_option("--resources", start.resources,
                "custom resources: NAME=AMOUNT (repeatable) or a JSON object, '{\"name\": 2}'");
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
  s->add_option("--port", start.port,
                "the port other machines reach this node on (default: 6379 on the head, a free "
                "one on other nodes; 0: a free one)")
      ->check(CLI::Range(0, 65535));
  s->add_option("--node-ip", start.node_ip,
                "the address this node listens on and is reached at (default: the address of "
                "this machine's default route)");
  s->add_option("--labels", start.labels,
                "node labels, KEY=VALUE,... (label selectors match them)");
  s->add_option("--token", start.token,
                "the cluster token, to join (default: $PRISM_AUTH_TOKEN, --token-file, or a "
                "node of this machine in that cluster)");
  s->add_option("--token-file", start.token_file, "read the cluster token from this file");
  s->add_option("--heartbeat-ms", start.heartbeat_ms, "head: how often nodes report (milliseconds)")
      ->check(CLI::Range(10, 60000));
  s->add_option("--node-dead-after-ms", start.node_dead_after_ms,
                "head: a node not heard from this long is dead (milliseconds)")
      ->check(CLI::Range(50, 3600000));
  std::string address = "auto";
  std::string token, token_file;
  auto* st = app.add_subcommand("status",
                                "show this node's resources, workers, leases and object "
                                "store, and the cluster's nodes");
  st->add_option("--address", address,
                 "auto, a session folder, or a head's IP:PORT (lists the cluster's nodes)");
  st->add_option("--token", token, "the cluster token (for --address IP:PORT)");
  st->add_option("--token-file", token_file, "read the cluster token from this file");
  bool json = false;
  st->add_flag("--json", json, "print the cluster's nodes as JSON (and nothing else)");
  auto* sp = app.add_subcommand("stop", "stop this machine's nodes (or the one of --address)");
  sp->add_option("--address", address, "a session folder, or auto (every node of this machine)");
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
  if (st->parsed()) return Status(address, token, token_file, json);
  if (sp->parsed()) return Stop(address);
  return 0;
}

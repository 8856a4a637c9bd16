#include <fcntl.h>
#include <prism/cluster_utils.h>
#include <prism/errors.h>
#include <prism/internal/runtime_api.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "control/control_server.h"
#include "node/node_daemon.h"
#include "rpc/blocking_client.h"
#include "rpc/connection.h"
#include "worker/control_client.h"

namespace prism::cluster_utils {
namespace {

// Runs the prism tool with `args`; its exit code, and its stdout and stderr together.
int RunTool(const std::vector<std::string>& args, std::string* out) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    std::vector<char*> argv;
    std::string tool = internal::ToolPath();
    argv.push_back(tool.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Match(const std::string& text, const std::string& pattern) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(pattern)) ? m[1].str() : "";
}

std::string Number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

rpc::StatusReply StatusOf(const std::string& session_dir, const std::string& token) {
  return ReadNodeStatus(DaemonSocketPath(session_dir), token);
}

}  // namespace

bool ClusterNode::Alive() const {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  char state = line[close + 2];
  return state != 'Z' && state != 'X';  // an exited process nobody reaped yet is not alive
}

Cluster::Cluster(const NodeArgs& head) {
  root_ = "/tmp/prism-cluster-XXXXXX";
  if (::mkdtemp(root_.data()) == nullptr)
    throw RuntimeError("cannot make a folder for the cluster");
  if (const char* t = std::getenv("PRISM_TMPDIR"); t != nullptr) saved_tmpdir_ = t;
  ::setenv("PRISM_TMPDIR", root_.c_str(), 1);
  try {
    head_ = Start(head, true);
  } catch (...) {
    Shutdown();
    throw;
  }
}

Cluster::~Cluster() { Shutdown(); }

ClusterNode Cluster::Start(const NodeArgs& a, bool head) {
  std::vector<std::string> args = {"start", "--node-ip", "127.0.0.1", "--port", "0"};
  if (head) {
    args.push_back("--head");
  } else {
    args.insert(args.end(), {"--address", head_.address, "--token", token_});
  }
  args.insert(args.end(),
              {"--num-cpus", Number(a.num_cpus), "--num-gpus", std::to_string(a.num_gpus),
               "--object-store-memory", std::to_string(a.object_store_memory)});
  if (!a.resources.empty()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : a.resources) j[k] = v;
    args.insert(args.end(), {"--resources", j.dump()});
  }
  if (!a.labels.empty()) {
    std::string labels;
    for (const auto& [k, v] : a.labels) labels += (labels.empty() ? "" : ",") + k + "=" + v;
    args.insert(args.end(), {"--labels", labels});
  }
  if (a.heartbeat_ms > 0)
    args.insert(args.end(), {"--heartbeat-ms", std::to_string(a.heartbeat_ms)});
  if (a.node_dead_after_ms > 0) {
    args.insert(args.end(), {"--node-dead-after-ms", std::to_string(a.node_dead_after_ms)});
  }
  std::string out;
  if (RunTool(args, &out) != 0) throw RuntimeError("the node did not start: " + out);
  ClusterNode n;
  n.is_head = head;
  n.pid = std::stoi(Match(out, "started \\(pid (\\d+)\\)"));
  n.session_dir = Match(out, "session: (\\S+)");
  if (head) token_ = Match(out, "--token (\\S+)");
  rpc::StatusReply own = StatusOf(n.session_dir, token_);
  if (own.nodes_size() == 0) throw RuntimeError("the node of " + n.session_dir + " did not answer");
  n.node_id = NodeId::FromBinary(own.nodes(0).node_id()).Hex();
  n.address = own.nodes(0).ip() + ":" + std::to_string(own.nodes(0).port());
  return n;
}

ClusterNode Cluster::AddNode(const NodeArgs& args, bool wait) {
  ClusterNode n = Start(args, false);
  nodes_.push_back(n);
  if (wait) WaitForNodes();
  return n;
}

void Cluster::RemoveNode(const ClusterNode& node, bool allow_graceful) {
  if (allow_graceful) {
    std::string out;
    (void)RunTool({"stop", "--address", node.session_dir}, &out);
  } else {
    ::kill(node.pid, SIGKILL);
  }
  for (int i = 0; i < 1000 && node.Alive(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::erase_if(nodes_, [&](const ClusterNode& n) { return n.pid == node.pid; });
}

std::vector<NodeInfo> Cluster::Nodes() const {
  RemoteControl control(head_.address, token_, std::chrono::milliseconds(5000));
  rpc::ListNodesReply reply;
  Status st = control.ListNodes(&reply);
  if (!st.ok()) throw RuntimeError("the head did not answer: " + st.message());
  rpc::StatusReply status;
  *status.mutable_nodes() = reply.nodes();
  return NodesOf(status);
}

void Cluster::WaitForNodes(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    size_t found = 0;
    for (const auto& n : Nodes()) {
      if (!n.alive) continue;
      found += n.node_id == head_.node_id ? 1 : 0;
      for (const auto& mine : nodes_) found += n.node_id == mine.node_id ? 1 : 0;
    }
    if (found == nodes_.size() + 1) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw RuntimeError("the cluster's nodes did not all come up in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Cluster::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  auto others = nodes_;
  for (const auto& n : others) RemoveNode(n);
  if (head_.pid > 0) RemoveNode(head_);
  if (saved_tmpdir_) {
    ::setenv("PRISM_TMPDIR", saved_tmpdir_->c_str(), 1);
  } else {
    ::unsetenv("PRISM_TMPDIR");
  }
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

}  // namespace prism::cluster_utils

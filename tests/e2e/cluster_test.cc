// A cluster of node daemons on one machine (loopback): `prism start --head`, nodes that join with
// the token, prism::Nodes() and `prism status` across them, a node killed and declared dead, a
// wrong token refused, and `prism stop` ending every node of the machine.
#include <gtest/gtest.h>
#include <prism/cluster_utils.h>
#include <prism/prism.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include "control/control_server.h"
#include "e2e/run_command.h"
#include "node/session.h"

namespace fs = std::filesystem;

namespace {

int Twice(int x) { return 2 * x; }
PRISM_REMOTE(Twice);

using prism::testing::RunCommand;

std::string Match(const std::string& text, const std::string& pattern) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(pattern)) ? m[1].str() : "";
}

const prism::NodeInfo* FindByLabel(const std::vector<prism::NodeInfo>& nodes,
                                   const std::string& zone) {
  for (const auto& n : nodes) {
    auto it = n.labels.find("zone");
    if (it != n.labels.end() && it->second == zone) return &n;
  }
  return nullptr;
}

TEST(ClusterTest, NodesJoinAreListedDieAndStop) {
  std::string root = (fs::temp_directory_path() / "prism-cluster-XXXXXX").string();
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  setenv("PRISM_TMPDIR", root.c_str(), 1);
  std::string tool = PRISM_TOOL;
  std::string common = " --node-ip 127.0.0.1 --num-cpus 1 --object-store-memory 67108864";
  std::string out;
  ASSERT_EQ(RunCommand(tool +
                           " start --head --port 0 --labels zone=a --heartbeat-ms 100 "
                           "--node-dead-after-ms 1000" +
                           common,
                       &out),
            0)
      << out;
  std::string address = Match(out, "cluster address: (\\S+)");
  std::string token = Match(out, "--token (\\S+)");
  ASSERT_FALSE(address.empty()) << out;
  ASSERT_EQ(token.size(), 64u) << out;

  // Two nodes join: one with the token given, one finding it through this machine's head.
  out.clear();
  ASSERT_EQ(RunCommand(tool + " start --address " + address + " --token " + token +
                           " --labels zone=b,rack=r1 --resources '{\"disk\": 3}'" + common,
                       &out),
            0)
      << out;
  EXPECT_NE(out.find("joined the cluster at " + address), std::string::npos) << out;
  std::string session_b = Match(out, "session: (\\S+)");
  out.clear();
  ASSERT_EQ(RunCommand(tool + " start --address " + address + " --labels zone=c" + common, &out), 0)
      << out;
  pid_t doomed = std::stoi(Match(out, "node started \\(pid (\\d+)\\)"));

  // A wrong token is refused, and says so.
  out.clear();
  EXPECT_NE(RunCommand(tool + " start --address " + address + " --token wrong" + common, &out), 0);
  EXPECT_NE(out.find("a wrong cluster token"), std::string::npos) << out;

  // A driver on this machine finds the head ("auto") and sees the whole cluster.
  prism::Init({.address = "auto"});
  EXPECT_EQ(prism::Get(prism::Task(Twice).Remote(21)), 42);
  auto nodes = prism::Nodes();
  for (int i = 0; i < 50 && nodes.size() < 3; ++i) {  // the head's view: its table, at once
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    nodes = prism::Nodes();
  }
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_TRUE(nodes[0].is_head);  // this driver's node first
  EXPECT_EQ(nodes[0].labels.at("zone"), "a");
  EXPECT_EQ(nodes[0].address, "127.0.0.1");
  EXPECT_EQ(address, "127.0.0.1:" + std::to_string(nodes[0].port));
  const prism::NodeInfo* b = FindByLabel(nodes, "b");
  ASSERT_NE(b, nullptr);
  const int b_port = b->port;
  EXPECT_TRUE(b->alive);
  EXPECT_FALSE(b->is_head);
  EXPECT_EQ(b->labels.at("rack"), "r1");
  EXPECT_EQ(b->resources.at("disk"), 3.0);
  EXPECT_EQ(b->resources.at("CPU"), 1.0);
  EXPECT_GT(b->port, 0);
  EXPECT_NE(b->port, nodes[0].port);
  EXPECT_EQ(b->object_store_capacity, 64u << 20);
  EXPECT_EQ(prism::ClusterResources().at("CPU"), 3.0);
  EXPECT_EQ(prism::ClusterResources().at("disk"), 3.0);

  // A node killed outright is declared dead once silent for 1 s, with why.
  ASSERT_EQ(kill(doomed, SIGKILL), 0);
  const prism::NodeInfo* c = nullptr;
  for (int i = 0; i < 100; ++i) {
    nodes = prism::Nodes();
    c = FindByLabel(nodes, "c");
    if (c != nullptr && !c->alive) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->alive);
  EXPECT_NE(c->death_cause.find("not heard from"), std::string::npos) << c->death_cause;
  EXPECT_EQ(prism::ClusterResources().at("CPU"), 2.0);

  // `prism status` shows the cluster; `--address` asks the head over the network.
  std::string status;
  ASSERT_EQ(RunCommand(tool + " status", &status), 0) << status;
  EXPECT_NE(status.find("cluster " + address + ": 2 node(s) alive, 1 dead"), std::string::npos)
      << status;
  status.clear();
  ASSERT_EQ(RunCommand(tool + " status --address " + address + " --token " + token, &status), 0)
      << status;
  EXPECT_NE(status.find("labels: rack=r1,zone=b"), std::string::npos) << status;
  EXPECT_NE(status.find("disk 3/3"), std::string::npos) << status;
  status.clear();
  EXPECT_NE(RunCommand(tool + " status --address " + address + " --token nope", &status), 0);
  const pid_t me = getpid();
  prism::Shutdown();

  // The head's job table: this driver's job (on the head), finished now; then a driver on node b,
  // whose node registers its job with the head over the network.
  prism::RemoteControl control(address, token, std::chrono::milliseconds(5000));
  auto job_of = [&](pid_t pid) -> std::optional<prism::rpc::JobInfo> {  // its newest job
    prism::rpc::ListJobsReply jobs;
    if (!control.ListJobs(&jobs).ok()) return std::nullopt;
    std::optional<prism::rpc::JobInfo> newest;
    for (const auto& j : jobs.jobs()) {
      if (j.driver_pid() == pid) newest = j;
    }
    return newest;
  };
  auto first = job_of(me);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->executable(), fs::read_symlink("/proc/self/exe").string());
  EXPECT_EQ(first->driver_node_address(), address);
  EXPECT_EQ(first->state(), prism::rpc::JOB_FINISHED);
  prism::Init({.address = session_b});
  std::optional<prism::rpc::JobInfo> second;
  for (int i = 0; i < 100; ++i) {  // registered from node b's link thread
    second = job_of(me);
    if (second && second->job_id() != first->job_id()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(second.has_value());
  std::ifstream log_b(session_b + "/daemon.log");
  std::string b_log((std::istreambuf_iterator<char>(log_b)), std::istreambuf_iterator<char>());
  EXPECT_NE(second->job_id(), first->job_id()) << b_log;
  EXPECT_EQ(second->state(), prism::rpc::JOB_RUNNING);
  EXPECT_NE(second->driver_node_address(), address);
  EXPECT_EQ(second->driver_node_address(), "127.0.0.1:" + std::to_string(b_port));
  prism::Shutdown();

  // `prism stop` ends every node of this machine; a node that stops leaves the cluster first.
  out.clear();
  ASSERT_EQ(RunCommand(tool + " stop", &out), 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_TRUE(prism::LocalSessions().empty());
  std::error_code ec;
  fs::remove_all(root, ec);
}

TEST(ClusterTest, TheClusterHelperStartsListsRemovesAndStopsNodes) {
  const char* before = std::getenv("PRISM_TMPDIR");
  std::string saved = before == nullptr ? "" : before;
  std::vector<int> pids;
  {
    prism::cluster_utils::Cluster cluster(
        {.num_cpus = 1, .labels = {{"zone", "a"}}, .heartbeat_ms = 100, .node_dead_after_ms = 800});
    auto b = cluster.AddNode({.num_cpus = 2, .resources = {{"ssd", 1}}, .labels = {{"zone", "b"}}});
    auto c = cluster.AddNode({.num_cpus = 1, .labels = {{"zone", "c"}}});
    cluster.WaitForNodes();
    pids = {cluster.head().pid, b.pid, c.pid};
    EXPECT_TRUE(cluster.head().is_head);
    EXPECT_FALSE(b.is_head);
    EXPECT_NE(b.address, cluster.address());

    prism::Init({.address = cluster.address()});
    EXPECT_EQ(prism::Get(prism::Task(Twice).Remote(4)), 8);
    auto nodes = prism::Nodes();
    ASSERT_EQ(nodes.size(), 3u);
    EXPECT_EQ(nodes[0].node_id, cluster.head().node_id);
    ASSERT_NE(FindByLabel(nodes, "b"), nullptr);
    EXPECT_EQ(FindByLabel(nodes, "b")->resources.at("ssd"), 1.0);
    EXPECT_EQ(prism::ClusterResources().at("CPU"), 4.0);

    cluster.RemoveNode(b);  // gracefully: it leaves at once
    EXPECT_FALSE(b.Alive());
    auto listed = cluster.Nodes();
    ASSERT_EQ(listed.size(), 3u);
    const prism::NodeInfo* gone = FindByLabel(listed, "b");
    ASSERT_NE(gone, nullptr);
    EXPECT_FALSE(gone->alive);
    cluster.RemoveNode(c, /*allow_graceful=*/false);  // killed: dead once silent for 800 ms
    bool dead = false;
    for (int i = 0; i < 100 && !dead; ++i) {
      const prism::NodeInfo* n = FindByLabel(cluster.Nodes(), "c");
      dead = n != nullptr && !n->alive;
      if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(dead);
    prism::Shutdown();
  }
  // Nothing left: the daemons are gone and the environment is as it was.
  for (int pid : pids) {
    prism::cluster_utils::ClusterNode n;
    n.pid = pid;
    EXPECT_FALSE(n.Alive()) << pid;
  }
  const char* after = std::getenv("PRISM_TMPDIR");
  EXPECT_EQ(after == nullptr ? "" : std::string(after), saved);
}

TEST(ClusterTest, ANodeDeclaredDeadThatComesBackIsFencedAndStops) {
  prism::cluster_utils::Cluster cluster({.heartbeat_ms = 100, .node_dead_after_ms = 500});
  auto b = cluster.AddNode({.labels = {{"zone", "b"}}});
  // Frozen past the deadline: the head declares it dead.
  ASSERT_EQ(kill(b.pid, SIGSTOP), 0);
  bool dead = false;
  for (int i = 0; i < 100 && !dead; ++i) {
    const prism::NodeInfo* n = FindByLabel(cluster.Nodes(), "b");
    dead = n != nullptr && !n->alive;
    if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(dead);
  // Thawed, it reports again, hears that it is dead, and stops rather than run on unseen.
  ASSERT_EQ(kill(b.pid, SIGCONT), 0);
  for (int i = 0; i < 300 && b.Alive(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(b.Alive());
  std::ifstream log(b.session_dir + "/daemon.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("holds this node as dead"), std::string::npos) << text;
  // It is not counted again: still one dead entry for it, and the head alone alive.
  auto nodes = cluster.Nodes();
  EXPECT_EQ(std::count_if(nodes.begin(), nodes.end(), [](const auto& n) { return n.alive; }), 1);
}

}  // namespace

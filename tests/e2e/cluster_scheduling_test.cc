// Scheduling across the nodes of a cluster on one machine (loopback): a lease the caller's node
// should not serve spills to another node's daemon, which learns the job from the control
// service and starts its workers. Custom resources, labels, node affinity, SPREAD, and spillback
// once the caller's node is full; a hard affinity to a node that is gone fails clearly.
#include <gtest/gtest.h>
#include <prism/cluster_utils.h>
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "e2e/run_command.h"

namespace {

std::string WhereAmI() { return prism::GetNodeId(); }
PRISM_REMOTE(WhereAmI);

std::string WhereAfter(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return prism::GetNodeId();
}
PRISM_REMOTE(WhereAfter);

// A task that submits a task of its own: the child's lease is the worker's to ask for.
std::string ChildWhere(std::string zone) {
  prism::TaskOptions o;
  o.label_selector = {{"zone", zone}};
  return prism::Get(prism::Task(WhereAmI).Options(o).Remote());
}
PRISM_REMOTE(ChildWhere);

class Where {
 public:
  std::string Node() const { return prism::GetNodeId(); }
};
Where* MakeWhere() { return new Where(); }
PRISM_REMOTE(MakeWhere, &Where::Node);

// Made by a task: the actor lives on that task's node, its record in that node's daemon.
prism::ActorHandle<Where> MakeThere() { return prism::Actor(MakeWhere).Remote(); }
PRISM_REMOTE(MakeThere);

// Node `session`'s workers alive, as `prism status` shows them (-1: no answer).
int WorkersAlive(const std::string& session) {
  std::string out;
  if (prism::testing::RunCommand(std::string(PRISM_TOOL) + " status --address " + session, &out) !=
      0)
    return -1;
  std::smatch m;
  return std::regex_search(out, m, std::regex("workers: (\\d+) alive")) ? std::stoi(m[1].str())
                                                                        : -1;
}

// Waits until no lease holds CPUs anywhere (leases of earlier tasks are kept idle for a while
// before they go back), as the nodes last reported.
void WaitForIdleCluster() {
  for (int i = 0; i < 200; ++i) {
    if (prism::AvailableResources()["CPU"] == prism::ClusterResources()["CPU"]) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string On(prism::TaskOptions o) {
  return prism::Get(prism::Task(WhereAmI).Options(o).Remote());
}

TEST(ClusterSchedulingTest, TasksGoWhereTheyArePinnedSpreadAndSpillWhenTheNodeIsFull) {
  prism::cluster_utils::Cluster cluster(
      {.num_cpus = 1, .labels = {{"zone", "a"}}, .heartbeat_ms = 100, .node_dead_after_ms = 1000});
  auto b = cluster.AddNode({.num_cpus = 2, .resources = {{"ssd", 1}}, .labels = {{"zone", "b"}}});
  auto c = cluster.AddNode({.num_cpus = 2, .labels = {{"zone", "c"}}});
  cluster.WaitForNodes();
  prism::Init({.address = cluster.address()});
  const std::string a = cluster.head().node_id;
  ASSERT_EQ(prism::GetNodeId(), a) << "the driver joined through the head's node";

  // The head has one CPU: tasks that hold theirs for a while overflow to the other nodes (first,
  // while no lease of another kind holds the other nodes' CPUs).
  std::vector<prism::ObjectRef<std::string>> busy;
  for (int i = 0; i < 5; ++i) busy.push_back(prism::Task(WhereAfter).Remote(500));
  std::set<std::string> ran;
  for (auto& r : busy) ran.insert(prism::Get(r));
  ran.erase(a);
  EXPECT_FALSE(ran.empty()) << "the head has one CPU: some of them ran on the other nodes";

  // A custom resource only one node has.
  EXPECT_EQ(On({.resources = {{"ssd", 1}}}), b.node_id);
  // Labels: a value, a negation, a list.
  prism::TaskOptions o;
  o.label_selector = {{"zone", "c"}};
  EXPECT_EQ(On(o), c.node_id);
  o.label_selector = {{"zone", "!in(a,c)"}};
  EXPECT_EQ(On(o), b.node_id);
  // Hard affinity to each node.
  for (const std::string& n : {a, b.node_id, c.node_id}) {
    prism::TaskOptions pinned;
    pinned.node_affinity = {n, false};
    EXPECT_EQ(On(pinned), n);
  }
  // A worker of another node submits too: its lease spills from its own node.
  EXPECT_EQ(prism::Get(prism::Task(ChildWhere)
                           .Options({.node_affinity = {b.node_id, false}})
                           .Remote(std::string("c"))),
            c.node_id);

  // SPREAD reaches every node (once the earlier tasks' leases went back: SPREAD takes the next
  // node with room, and a node whose CPUs idle leases hold has none).
  WaitForIdleCluster();
  std::vector<prism::ObjectRef<std::string>> spread;
  // (Long enough that the leases asked for while the first tasks run are granted before the
  // first lease has drained the queue, on a loaded machine too.)
  for (int i = 0; i < 12; ++i) {
    spread.push_back(
        prism::Task(WhereAfter)
            .Options({.num_cpus = 0.5, .scheduling_strategy = prism::SchedulingStrategy::kSpread})
            .Remote(600));
  }
  std::set<std::string> reached;
  for (auto& r : spread) reached.insert(prism::Get(r));
  EXPECT_EQ(reached, (std::set<std::string>{a, b.node_id, c.node_id}));

  // A hard affinity to a node that is gone fails at once; a soft one runs elsewhere.
  cluster.RemoveNode(c);
  for (int i = 0; i < 100; ++i) {
    bool dead = false;
    for (const auto& n : prism::Nodes()) dead = dead || (n.node_id == c.node_id && !n.alive);
    if (dead) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  prism::TaskOptions gone;
  gone.node_affinity = {c.node_id, false};
  try {
    On(gone);
    ADD_FAILURE() << "a task pinned to a removed node ran";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("not a live node"), std::string::npos) << e.what();
  }
  gone.node_affinity.soft = true;
  EXPECT_NE(On(gone), c.node_id);
  // Actors run on their creator's node: one pinned elsewhere fails clearly; pinned here it runs.
  auto here = prism::Actor(MakeWhere).Options({.node_affinity = {a, false}}).Remote();
  EXPECT_EQ(prism::Get(here.Task(&Where::Node).Remote()), a);
  auto away = prism::Actor(MakeWhere).Options({.node_affinity = {b.node_id, false}}).Remote();
  try {
    prism::Get(away.Task(&Where::Node).Remote());
    ADD_FAILURE() << "an actor pinned to another node ran";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(std::string(e.what()).find("creator's node"), std::string::npos) << e.what();
  }
  // A handle to an actor another node made is called from here.
  auto there =
      prism::Get(prism::Task(MakeThere).Options({.node_affinity = {b.node_id, false}}).Remote());
  EXPECT_EQ(prism::Get(there.Task(&Where::Node).Remote()), b.node_id);
  // Malformed options fail where they are given.
  prism::TaskOptions bad;
  bad.node_affinity = {"not-hex", false};
  EXPECT_THROW(prism::Task(WhereAmI).Options(bad).Remote(), prism::InvalidArgumentError);
  bad = {};
  bad.label_selector = {{"zone", "in(a"}};
  EXPECT_THROW(prism::Task(WhereAmI).Options(bad).Remote(), prism::InvalidArgumentError);
  EXPECT_GT(WorkersAlive(b.session_dir), 0) << "b runs workers of this job";
  prism::Shutdown();
  // The job ended: the control service says so in b's next heartbeat, and b ends its workers.
  int alive = -1;
  for (int i = 0; i < 100; ++i) {
    alive = WorkersAlive(b.session_dir);
    if (alive == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(alive, 0) << "the job's workers on another node outlived it";
}

}  // namespace

namespace {

TEST(ClusterSchedulingTest, ANodeThatLacksTheDriversProgramFailsItsTasksWithWhy) {
  prism::cluster_utils::Cluster cluster({.num_cpus = 1});
  auto b = cluster.AddNode({.num_cpus = 1});
  cluster.WaitForNodes();
  // A copy of the driver that deletes itself once it runs: no node finds it at its path.
  std::string dir = (std::filesystem::temp_directory_path() / "prism-vanish-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  std::string copy = dir + "/driver";
  std::filesystem::copy_file(PRISM_VANISHING_DRIVER, copy);
  std::string out;
  int rc = prism::testing::RunCommand(copy + " " + cluster.address() + " " + b.node_id, &out);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("here: " + cluster.head().node_id), std::string::npos) << out;
  EXPECT_NE(out.find("there: failed"), std::string::npos) << out;
  EXPECT_NE(out.find("is not on this machine"), std::string::npos) << out;
}

}  // namespace

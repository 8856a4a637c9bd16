// Scheduling across the nodes of a cluster on one machine (loopback): a lease the caller's node
// should not serve spills to another node's daemon, which learns the job from the control
// service and starts its workers. Custom resources, labels, node affinity, SPREAD, and spillback
// once the caller's node is full; a hard affinity to a node that is gone fails clearly.
#include <gtest/gtest.h>
#include <prism/cluster_utils.h>
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

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
  EXPECT_GE(ran.size(), 2u) << "spilled beyond the head: ran on " << *ran.begin() << " (head " << a
                            << ")";

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

  // SPREAD reaches every node.
  std::vector<prism::ObjectRef<std::string>> spread;
  for (int i = 0; i < 9; ++i) {
    spread.push_back(
        prism::Task(WhereAfter)
            .Options({.num_cpus = 0.5, .scheduling_strategy = prism::SchedulingStrategy::kSpread})
            .Remote(200));
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
  // Malformed options fail where they are given.
  prism::TaskOptions bad;
  bad.node_affinity = {"not-hex", false};
  EXPECT_THROW(prism::Task(WhereAmI).Options(bad).Remote(), prism::InvalidArgumentError);
  bad = {};
  bad.label_selector = {{"zone", "in(a"}};
  EXPECT_THROW(prism::Task(WhereAmI).Options(bad).Remote(), prism::InvalidArgumentError);
  prism::Shutdown();
}

}  // namespace

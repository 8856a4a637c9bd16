// The control service's node table on a fake clock: joining, reports, silence, leaving, fencing.
#include "control/node_table.h"

#include <gtest/gtest.h>

#include "base/ids.h"
#include "rpc/frame.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

class NodeTableTest : public ::testing::Test {
 protected:
  NodeTableTest() : table_(Options()) {}

  NodeTable::Options Options() {
    NodeTable::Options o;
    o.heartbeat_period = 100ms;
    o.dead_after = 1000ms;
    o.max_dead_kept = 2;
    o.now = [this] { return now_; };
    return o;
  }

  static rpc::RegisterNodeRequest Join(const NodeId& id, int port, double cpus = 2) {
    rpc::RegisterNodeRequest req;
    req.set_protocol_version(rpc::kProtocolVersion);
    auto* n = req.mutable_node();
    n->set_node_id(id.Binary());
    n->set_ip("10.0.0.1");
    n->set_port(port);
    auto* cpu = n->add_total();
    cpu->set_name("CPU");
    cpu->set_milli(static_cast<int64_t>(cpus * 1000));
    return req;
  }

  rpc::HeartbeatReply Beat(const NodeId& id, int64_t cpu_free_milli) {
    rpc::HeartbeatRequest req;
    req.set_node_id(id.Binary());
    auto* cpu = req.add_available();
    cpu->set_name("CPU");
    cpu->set_milli(cpu_free_milli);
    rpc::HeartbeatReply reply;
    EXPECT_TRUE(table_.Heartbeat(req, &reply).ok());
    return reply;
  }

  NodeTable::Clock::time_point now_ = NodeTable::Clock::time_point() + 1h;
  NodeTable table_;
};

TEST_F(NodeTableTest, NodesJoinInOrderAndTheReplyCarriesTheHeadsSettings) {
  NodeId a = RandomUniqueId(), b = RandomUniqueId();
  auto head = Join(a, 6379);
  head.mutable_node()->set_is_head(true);
  rpc::RegisterNodeReply reply;
  ASSERT_TRUE(table_.Register(head, &reply).ok());
  EXPECT_EQ(reply.heartbeat_period_ms(), 100);
  EXPECT_EQ(reply.node_dead_after_ms(), 1000);
  EXPECT_EQ(reply.head_node_id(), a.Binary());
  EXPECT_EQ(reply.node_index(), 1u);  // job ids' high bits: one number per node
  ASSERT_TRUE(table_.Register(Join(b, 7000, 4), &reply).ok());
  EXPECT_EQ(reply.head_node_id(), a.Binary());
  EXPECT_EQ(reply.node_index(), 2u);
  auto nodes = table_.Nodes();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].node_id(), a.Binary());
  EXPECT_EQ(nodes[1].node_id(), b.Binary());
  EXPECT_EQ(nodes[1].state(), rpc::NODE_ALIVE);
  // Until its first report, a node's free resources are its totals.
  ASSERT_EQ(nodes[1].available_size(), 1);
  EXPECT_EQ(nodes[1].available(0).milli(), 4000);
  EXPECT_GT(nodes[1].registered_unix_ms(), 0);
  EXPECT_EQ(table_.alive(), 2u);
}

TEST_F(NodeTableTest, AHeartbeatUpdatesFreeResourcesAndReturnsTheTable) {
  NodeId a = RandomUniqueId(), b = RandomUniqueId();
  ASSERT_TRUE(table_.Register(Join(a, 1), nullptr).ok());
  ASSERT_TRUE(table_.Register(Join(b, 2), nullptr).ok());
  now_ += 300ms;
  const uint64_t before = table_.version();
  auto reply = Beat(b, 500);
  EXPECT_GT(table_.version(), before) << "a report changes what the schedulers see";
  EXPECT_TRUE(reply.known());
  ASSERT_EQ(reply.nodes_size(), 2);
  EXPECT_EQ(reply.nodes(1).available(0).milli(), 500);
  EXPECT_EQ(reply.nodes(1).last_heard_ms_ago(), 0);
  EXPECT_EQ(reply.nodes(0).last_heard_ms_ago(), 300);
}

TEST_F(NodeTableTest, ASilentNodeDiesAfterDeadAfterAndStaysDead) {
  NodeId a = RandomUniqueId(), b = RandomUniqueId();
  ASSERT_TRUE(table_.Register(Join(a, 1), nullptr).ok());
  ASSERT_TRUE(table_.Register(Join(b, 2), nullptr).ok());
  now_ += 900ms;
  Beat(a, 2000);
  EXPECT_TRUE(table_.ExpireSilent().empty());
  now_ += 200ms;  // b: 1100 ms silent; a: 200 ms
  auto died = table_.ExpireSilent();
  ASSERT_EQ(died.size(), 1u);
  EXPECT_EQ(died[0].node_id(), b.Binary());
  EXPECT_EQ(died[0].state(), rpc::NODE_DEAD);
  EXPECT_NE(died[0].death_cause().find("not heard from for 1100 ms"), std::string::npos)
      << died[0].death_cause();
  EXPECT_EQ(died[0].available_size(), 0);
  EXPECT_EQ(table_.alive(), 1u);
  // Its late report is answered "unknown": it must stop (fenced), and it cannot join again.
  auto late = Beat(b, 2000);
  EXPECT_FALSE(late.known());
  EXPECT_NE(late.why().find("declared dead"), std::string::npos) << late.why();
  EXPECT_EQ(late.nodes_size(), 0);
  Status again = table_.Register(Join(b, 2), nullptr);
  EXPECT_EQ(again.code(), StatusCode::kPermissionDenied) << again.ToString();
  // The dead are listed with why.
  auto nodes = table_.Nodes();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[1].state(), rpc::NODE_DEAD);
}

TEST_F(NodeTableTest, AnUnknownNodeIsToldSo) {
  auto reply = Beat(RandomUniqueId(), 0);
  EXPECT_FALSE(reply.known());
  EXPECT_NE(reply.why().find("does not know"), std::string::npos) << reply.why();
}

TEST_F(NodeTableTest, LeavingMarksTheNodeDeadWithTheReason) {
  NodeId a = RandomUniqueId();
  ASSERT_TRUE(table_.Register(Join(a, 1), nullptr).ok());
  rpc::UnregisterNodeRequest leave;
  leave.set_node_id(a.Binary());
  leave.set_reason("prism stop");
  ASSERT_TRUE(table_.Unregister(leave).ok());
  auto nodes = table_.Nodes();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].state(), rpc::NODE_DEAD);
  EXPECT_EQ(nodes[0].death_cause(), "prism stop");
  // Twice is harmless; an unknown node is NotFound.
  EXPECT_TRUE(table_.Unregister(leave).ok());
  leave.set_node_id(RandomUniqueId().Binary());
  EXPECT_EQ(table_.Unregister(leave).code(), StatusCode::kNotFound);
}

TEST_F(NodeTableTest, ANewNodeAtAnAddressStillListedAliveReplacesTheOldOne) {
  NodeId old_id = RandomUniqueId(), fresh = RandomUniqueId();
  ASSERT_TRUE(table_.Register(Join(old_id, 7000), nullptr).ok());
  ASSERT_TRUE(table_.Register(Join(fresh, 7000), nullptr).ok());
  auto nodes = table_.Nodes();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].state(), rpc::NODE_DEAD);
  EXPECT_NE(nodes[0].death_cause().find("took its address"), std::string::npos);
  EXPECT_EQ(nodes[1].state(), rpc::NODE_ALIVE);
}

TEST_F(NodeTableTest, BadRegistrationsAreRefusedAndChangeNothing) {
  NodeId a = RandomUniqueId();
  auto wrong_version = Join(a, 1);
  wrong_version.set_protocol_version(rpc::kProtocolVersion + 1);
  Status st = table_.Register(wrong_version, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kProtocolError);
  EXPECT_NE(st.message().find("same prism version"), std::string::npos) << st.message();

  auto short_id = Join(a, 1);
  short_id.mutable_node()->set_node_id("abc");
  EXPECT_EQ(table_.Register(short_id, nullptr).code(), StatusCode::kInvalidArgument);

  auto no_ip = Join(a, 1);
  no_ip.mutable_node()->clear_ip();
  EXPECT_EQ(table_.Register(no_ip, nullptr).code(), StatusCode::kInvalidArgument);

  auto no_port = Join(a, 0);  // only an embedded head has no port
  EXPECT_EQ(table_.Register(no_port, nullptr).code(), StatusCode::kInvalidArgument);
  auto bad_port = Join(a, 70000);
  EXPECT_EQ(table_.Register(bad_port, nullptr).code(), StatusCode::kInvalidArgument);

  auto negative = Join(a, 1, -1);
  EXPECT_EQ(table_.Register(negative, nullptr).code(), StatusCode::kInvalidArgument);

  auto labels = Join(a, 1);
  (*labels.mutable_node()->mutable_labels())[""] = "x";
  EXPECT_EQ(table_.Register(labels, nullptr).code(), StatusCode::kInvalidArgument);
  auto many = Join(a, 1);
  for (int i = 0; i < 100; ++i)
    (*many.mutable_node()->mutable_labels())["k" + std::to_string(i)] = "v";
  EXPECT_EQ(table_.Register(many, nullptr).code(), StatusCode::kInvalidArgument);

  EXPECT_TRUE(table_.Nodes().empty());
  ASSERT_TRUE(table_.Register(Join(a, 1), nullptr).ok());
  EXPECT_EQ(table_.Register(Join(a, 2), nullptr).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(table_.Nodes().size(), 1u);

  rpc::HeartbeatRequest no_id;
  rpc::HeartbeatReply reply;
  EXPECT_EQ(table_.Heartbeat(no_id, &reply).code(), StatusCode::kInvalidArgument);
}

TEST_F(NodeTableTest, OnlyTheNewestDeadAreKept) {
  std::vector<NodeId> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(RandomUniqueId());
    ASSERT_TRUE(table_.Register(Join(ids.back(), 100 + i), nullptr).ok());
  }
  for (const auto& id : ids) {
    rpc::UnregisterNodeRequest leave;
    leave.set_node_id(id.Binary());
    ASSERT_TRUE(table_.Unregister(leave).ok());
  }
  auto nodes = table_.Nodes();
  ASSERT_EQ(nodes.size(), 2u);  // max_dead_kept
  EXPECT_EQ(nodes[0].node_id(), ids[2].Binary());
  EXPECT_EQ(nodes[1].node_id(), ids[3].Binary());
}

}  // namespace
}  // namespace prism

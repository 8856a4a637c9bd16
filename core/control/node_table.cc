#include "control/node_table.h"

#include <algorithm>
#include <utility>

#include "base/logging.h"
#include "base/resources.h"
#include "rpc/frame.h"

namespace prism {
namespace {

constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelKey = 256;
constexpr size_t kMaxLabelValue = 1024;
constexpr size_t kMaxResources = 1000;

int64_t MillisSince(NodeTable::Clock::time_point then, NodeTable::Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - then).count();
}

}  // namespace

Status CheckNodeInfo(const rpc::NodeInfo& info) {
  if (info.node_id().size() != NodeId::kSize) {
    return Status::InvalidArgument("a node id has " + std::to_string(NodeId::kSize) +
                                   " bytes, not " + std::to_string(info.node_id().size()));
  }
  if (info.ip().empty() || info.ip().size() > 255) {
    return Status::InvalidArgument("a node needs the address it listens on");
  }
  if (info.port() < 0 || info.port() > 65535 || (info.port() == 0 && !info.is_head())) {
    return Status::InvalidArgument("port " + std::to_string(info.port()) +
                                   " is not a node's cluster port");
  }
  if (info.total_size() > static_cast<int>(kMaxResources) ||
      info.available_size() > static_cast<int>(kMaxResources)) {
    return Status::InvalidArgument("a node has at most " + std::to_string(kMaxResources) +
                                   " resources");
  }
  std::map<std::string, int64_t> total;
  for (const auto& r : info.total()) total[r.name()] = r.milli();
  auto checked = ResourceSet::FromMilli(total);
  if (!checked.ok())
    return Status::InvalidArgument("the node's resources: " + checked.status().message());
  if (info.labels_size() > static_cast<int>(kMaxLabels)) {
    return Status::InvalidArgument("a node has at most " + std::to_string(kMaxLabels) + " labels");
  }
  for (const auto& [k, v] : info.labels()) {
    if (k.empty() || k.size() > kMaxLabelKey || v.size() > kMaxLabelValue) {
      return Status::InvalidArgument("label '" + k.substr(0, 64) +
                                     "': a key of 1 to 256 bytes, a value of at most 1024");
    }
  }
  return Status::OK();
}

NodeTable::NodeTable(Options options) : options_(std::move(options)) {}

Status NodeTable::Register(const rpc::RegisterNodeRequest& req, rpc::RegisterNodeReply* reply) {
  if (req.protocol_version() != rpc::kProtocolVersion) {
    return Status::ProtocolError("this cluster speaks protocol version " +
                                 std::to_string(rpc::kProtocolVersion) + ", the node " +
                                 std::to_string(req.protocol_version()) +
                                 ": run the same prism version on every node");
  }
  PRISM_RETURN_IF_ERROR(CheckNodeInfo(req.node()));
  NodeId id = NodeId::FromBinary(req.node().node_id());
  auto now = options_.now();
  MutexLock lock(mu_);
  if (auto it = nodes_.find(id); it != nodes_.end()) {
    if (it->second.info.state() == rpc::NODE_DEAD) {
      return Status::PermissionDenied("node " + id.Hex() + " was declared dead (" +
                                      it->second.info.death_cause() +
                                      "); restart it to join as a new node");
    }
    return Status::AlreadyExists("node " + id.Hex() + " is already in the cluster");
  }
  size_t alive = 0;
  for (auto& [other_id, e] : nodes_) {
    if (e.info.state() != rpc::NODE_ALIVE) continue;
    ++alive;
    if (e.info.port() != 0 && e.info.ip() == req.node().ip() &&
        e.info.port() == req.node().port()) {
      MarkDead(e, "a new node (" + id.Hex() + ") took its address " + e.info.ip() + ":" +
                      std::to_string(e.info.port()));
      --alive;
    }
  }
  ForgetOldDead();
  if (alive >= options_.max_nodes) {
    return Status::Unavailable("the cluster has its maximum of " +
                               std::to_string(options_.max_nodes) + " nodes");
  }
  Entry e;
  e.info = req.node();
  e.info.set_state(rpc::NODE_ALIVE);
  e.info.clear_death_cause();
  e.info.set_registered_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
  if (e.info.available_size() == 0) *e.info.mutable_available() = e.info.total();
  e.last_heard = now;
  e.order = next_order_++;
  PRISM_LOG_INFO("node {} joined from {}:{} ({}{})", id.Hex(), e.info.ip(), e.info.port(),
                 e.info.hostname(), e.info.is_head() ? ", the head" : "");
  nodes_[id] = std::move(e);
  version_++;
  const uint32_t index = next_index_;
  next_index_ = next_index_ >= 0xffff ? 1 : next_index_ + 1;
  if (reply != nullptr) {
    reply->set_node_index(index);
    reply->set_heartbeat_period_ms(options_.heartbeat_period.count());
    reply->set_node_dead_after_ms(options_.dead_after.count());
    for (const auto& [nid, n] : nodes_) {
      if (n.info.is_head()) reply->set_head_node_id(nid.Binary());
    }
  }
  return Status::OK();
}

Status NodeTable::Heartbeat(const rpc::HeartbeatRequest& req, rpc::HeartbeatReply* reply) {
  if (req.node_id().size() != NodeId::kSize) {
    return Status::InvalidArgument("a heartbeat without a node id");
  }
  if (req.available_size() > static_cast<int>(kMaxResources)) {
    return Status::InvalidArgument("a heartbeat with too many resources");
  }
  NodeId id = NodeId::FromBinary(req.node_id());
  auto now = options_.now();
  MutexLock lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end() || it->second.info.state() != rpc::NODE_ALIVE) {
    reply->set_known(false);
    reply->set_why(it == nodes_.end() ? "the control service does not know node " + id.Hex()
                                      : "node " + id.Hex() +
                                            " was declared dead: " + it->second.info.death_cause());
    return Status::OK();
  }
  it->second.last_heard = now;
  *it->second.info.mutable_available() = req.available();
  it->second.info.set_object_store_used(req.object_store_used());
  it->second.info.set_reports(it->second.info.reports() + 1);
  version_++;
  reply->set_known(true);
  FillNodes(reply->mutable_nodes());
  return Status::OK();
}

Status NodeTable::Unregister(const rpc::UnregisterNodeRequest& req) {
  NodeId id = NodeId::FromBinary(req.node_id());
  MutexLock lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return Status::NotFound("no node " + id.Hex() + " in the cluster");
  if (it->second.info.state() == rpc::NODE_ALIVE) {
    MarkDead(it->second,
             req.reason().empty() ? "it left the cluster" : req.reason().substr(0, 512));
    ForgetOldDead();
  }
  return Status::OK();
}

Status NodeTable::ListNodes(rpc::ListNodesReply* reply) {
  MutexLock lock(mu_);
  FillNodes(reply->mutable_nodes());
  return Status::OK();
}

std::vector<rpc::NodeInfo> NodeTable::ExpireSilent() {
  auto now = options_.now();
  std::vector<rpc::NodeInfo> died;
  MutexLock lock(mu_);
  for (auto& [id, e] : nodes_) {
    if (e.info.state() != rpc::NODE_ALIVE || now - e.last_heard < options_.dead_after) continue;
    MarkDead(e, "not heard from for " + std::to_string(MillisSince(e.last_heard, now)) + " ms");
    died.push_back(e.info);
  }
  ForgetOldDead();
  return died;
}

std::vector<rpc::NodeInfo> NodeTable::Nodes() const {
  google::protobuf::RepeatedPtrField<rpc::NodeInfo> all;
  {
    MutexLock lock(mu_);
    FillNodes(&all);
  }
  return {all.begin(), all.end()};
}

size_t NodeTable::alive() const {
  MutexLock lock(mu_);
  size_t n = 0;
  for (const auto& [id, e] : nodes_) n += e.info.state() == rpc::NODE_ALIVE ? 1 : 0;
  return n;
}

void NodeTable::MarkDead(Entry& e, const std::string& why) {
  version_++;
  e.info.set_state(rpc::NODE_DEAD);
  e.info.set_death_cause(why);
  e.info.clear_available();
  NodeId id = NodeId::FromBinary(e.info.node_id());
  PRISM_LOG_WARN("node {} ({}:{}) is dead: {}", id.Hex(), e.info.ip(), e.info.port(), why);
  dead_order_.push_back(id);
}

void NodeTable::ForgetOldDead() {
  while (dead_order_.size() > options_.max_dead_kept) {
    nodes_.erase(dead_order_.front());
    dead_order_.pop_front();
  }
}

void NodeTable::FillNodes(google::protobuf::RepeatedPtrField<rpc::NodeInfo>* out) const {
  auto now = options_.now();
  std::vector<const Entry*> order;
  order.reserve(nodes_.size());
  for (const auto& [id, e] : nodes_) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->order < b->order; });
  for (const Entry* e : order) {
    auto* n = out->Add();
    *n = e->info;
    n->set_last_heard_ms_ago(MillisSince(e->last_heard, now));
  }
}

}  // namespace prism

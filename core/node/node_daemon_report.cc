// The node daemon's reports: its status (for `prism status`, prism::Nodes() and the like), what
// it has free for the control service, and its drivers' jobs as the job table holds them.
#include <unistd.h>

#include <map>
#include <string>

#include "node/node_daemon.h"

namespace prism {

void NodeDaemon::SendStatus(rpc::Connection& conn, uint64_t request_id) {
  rpc::Envelope env;
  auto* s = env.mutable_status_reply();
  s->set_request_id(request_id);
  s->set_node_id(node_id_.Binary());
  for (const auto& [name, total] : config_.resources.milli()) {
    auto* line = s->add_resources();
    line->set_name(name);
    line->set_total_milli(total);
    line->set_available_milli(node_pool_.available().Get(name));
    for (const auto& [index, free] : node_pool_.Instances(name)) {
      auto* d = line->add_instances();
      d->set_index(index);
      d->set_total_milli(kMilli);
      d->set_available_milli(free);
    }
  }
  for (const auto& [gid, g] : groups_.all()) PlacementGroups::Fill(g, s->add_placement_groups());
  uint32_t idle = 0;
  for (auto& [wid, w] : workers_.all()) idle += w.state == WorkerPool::State::kIdle ? 1 : 0;
  s->set_workers_alive(static_cast<uint32_t>(workers_.all().size()));
  s->set_workers_idle(idle);
  s->set_leases_active(static_cast<uint32_t>(leases_.active()));
  s->set_leases_granted_total(leases_.granted_total());
  s->set_workers_started_total(workers_.started_total());
  s->set_pending_lease_requests(static_cast<uint32_t>(leases_.pending().size()));
  s->set_drivers(static_cast<uint32_t>(control_.alive_jobs()));
  s->set_pid(getpid());
  std::map<std::string, uint32_t> infeasible;
  for (const auto& req : leases_.pending()) {
    if (req.placement.placement_group() == 0 && !node_pool_.CanEverFit(req.shape)) {
      infeasible[req.shape.ToString()]++;
    }
  }
  for (const auto& [gid, g] : groups_.all()) {
    if (g.state == rpc::PG_PENDING && (!pool_status_.ok() || !groups_.Feasible(g))) {
      std::string shape = "placement group " + std::to_string(gid) + ":";
      for (const auto& b : g.bundles) shape += " {" + b.ToString() + "}";
      infeasible[shape]++;
    }
  }
  for (const auto& [shape, count] : infeasible) {
    auto* d = s->add_infeasible();
    d->set_shape(shape);
    d->set_count(count);
  }
  actors_.Report(s, [this](const WorkerId& id) {
    const Worker* w = workers_.Find(id);
    return w == nullptr ? pid_t{0} : w->pid;
  });
  if (store_service_) store_service_->Report(s->mutable_store(), config_.session_dir + "/spill");
  if (cluster_) {
    s->set_cluster_address(cluster_->address());
    // This node first, with what it has free now; then the others as last heard.
    rpc::HeartbeatRequest now;
    FillReport(&now);
    auto nodes = cluster_->Nodes();
    for (auto& n : nodes) {
      if (n.node_id() != node_id_.Binary()) continue;
      *n.mutable_available() = now.available();
      n.set_object_store_used(now.object_store_used());
      n.set_last_heard_ms_ago(0);
      *s->add_nodes() = n;
    }
    for (auto& n : nodes) {
      if (n.node_id() != node_id_.Binary()) *s->add_nodes() = std::move(n);
    }
  }
  conn.Send(env);
}

rpc::JobInfo NodeDaemon::JobInfoOf(const Job& job, pid_t driver_pid) const {
  rpc::JobInfo info;
  info.set_job_id(job.id.Binary());
  info.set_driver_node_id(node_id_.Binary());
  info.set_driver_node_address(cluster_->node_address());
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) info.set_hostname(host);
  info.set_driver_pid(driver_pid);
  info.set_driver_worker_id(job.driver_worker.Binary());
  info.set_executable(job.exe_path);
  info.set_build_id(job.build_id);
  for (const auto& a : job.argv) info.add_argv(a);
  for (const auto& e : job.env) info.add_env(e);
  info.set_cwd(job.cwd);
  for (const auto& d : job.code_search_path) info.add_code_search_path(d);
  info.set_python_executable(job.python_executable);
  for (const auto& p : job.launch_prefix) info.add_launch_prefix(p);
  info.set_timeline(job.timeline);
  return info;
}

void NodeDaemon::FillReport(rpc::HeartbeatRequest* report) const {
  for (const auto& [name, total] : config_.resources.milli()) {
    auto* r = report->add_available();
    r->set_name(name);
    // Less what requests waiting here for their workers will take: other nodes must not count
    // on it.
    r->set_milli(std::max<int64_t>(
        0, node_pool_.available().Get(name) - leases_.promised_to_starting().Get(name)));
  }
  if (store_) report->set_object_store_used(store_->stats().used);
  for (const auto& [id, job] : workers_.jobs()) {
    if (job.guest) report->add_guest_jobs(id.Binary());
  }
}

}  // namespace prism

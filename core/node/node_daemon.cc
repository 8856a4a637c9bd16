#include "node/node_daemon.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "base/ids.h"
#include "base/logging.h"
#include "control/requests.h"
#include "node/session.h"

namespace prism {
namespace {

// The configuration with its defaults filled in.
NodeDaemonConfig WithDefaults(NodeDaemonConfig config) {
  if (config.max_workers <= 0)
    config.max_workers = static_cast<int>(4 * config.resources.Get(kCpu) / kMilli) + 4;
  return config;
}

}  // namespace

std::string DaemonSocketPath(const std::string& session_dir) {
  return session_dir + "/daemon.sock";
}

NodeDaemon::NodeDaemon(asio::io_context& io, NodeDaemonConfig config, WorkerLauncher& launcher)
    : io_(io),
      config_(WithDefaults(std::move(config))),
      node_id_(RandomUniqueId()),
      signals_(io),
      actors_(node_id_,
              [this](const ActorRecord& a) {
                // Later: this may run inside a scheduling pass, which must not see workers and
                // requests vanish.
                asio::post(io_, [this, job = a.job] {
                  if (!stopped_) MaybeEraseJob(job);
                });
              }),
      workers_(io, launcher,
               WorkerPoolConfig{config_.session_dir, config_.token, config_.log_level,
                                config_.worker_register_timeout, config_.max_worker_start_failures,
                                config_.gpu_topology ? &*config_.gpu_topology : nullptr,
                                config_.gpu_topology_spec}),
      leases_(LeaseManagerConfig{config_.resources, config_.fixed_size, config_.max_workers},
              node_id_, node_pool_, groups_, workers_, *this) {
  auto pool = ResourcePool::Create(config_.resources);
  if (pool.ok() && config_.gpu_topology) {
    const gpu::Topology& t = *config_.gpu_topology;
    Status graph = pool->SetDeviceGraph(kGpu, DeviceGraph{t.BandwidthMatrix(), t.NvLinkMatrix()});
    if (!graph.ok())
      pool = Status::InvalidArgument("the GPU topology does not fit: " + graph.message());
  }
  if (pool.ok()) {
    node_pool_ = std::move(*pool);
  } else {
    pool_status_ = pool.status();
  }
}

NodeDaemon::~NodeDaemon() { Stop(); }

Status NodeDaemon::Start() {
  std::error_code fec;
  std::filesystem::create_directories(config_.session_dir, fec);
  if (fec) return Status::IOError("cannot create " + config_.session_dir + ": " + fec.message());
  ::chmod(config_.session_dir.c_str(), 0700);
  std::filesystem::path parent = std::filesystem::path(config_.session_dir).parent_path();
  if (parent == std::filesystem::path(SessionRoot())) ::chmod(parent.c_str(), 0700);
  PRISM_RETURN_IF_ERROR(pool_status_);
  workers_.Open();
  socket_path_ = DaemonSocketPath(config_.session_dir);
  ObjectStoreConfig store_config;
  store_config.capacity =
      config_.object_store_memory > 0 ? config_.object_store_memory : DefaultObjectStoreCapacity();
  store_config.spill_dir = config_.session_dir + "/spill";
  store_config.prefault = config_.object_store_prefault;
  disk_ = std::make_unique<DiskIoThread>(io_);
  store_config.run_io = [disk = disk_.get()](std::function<void()> io, std::function<void()> then) {
    disk->Run(std::move(io), std::move(then));
  };
  PRISM_ASSIGN_OR_RETURN(store_, ObjectStore::Open(std::move(store_config)));
  store_service_ =
      std::make_unique<StoreService>(*store_, [this](const WorkerId& id) { return IsAlive(id); });
  PRISM_ASSIGN_OR_RETURN(acceptor_, rpc::Listen(io_, socket_path_));
  ClusterConfig cluster = config_.cluster;
  cluster.session_dir = config_.session_dir;
  cluster_ = std::make_unique<NodeCluster>(io_, std::move(cluster));
  rpc::NodeInfo self;
  self.set_node_id(node_id_.Binary());
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) self.set_hostname(host);
  self.set_pid(getpid());
  self.set_session_dir(config_.session_dir);
  for (const auto& [name, milli] : config_.resources.milli()) {
    auto* r = self.add_total();
    r->set_name(name);
    r->set_milli(milli);
  }
  self.set_object_store_capacity(store_->capacity());
  view_.self = self;
  for (const auto& [k, v] : config_.cluster.labels) (*view_.self.mutable_labels())[k] = v;
  cluster_->set_on_tick([this] { RefreshClusterView(); });
  cluster_->set_on_jobs_finished([this](const std::vector<JobId>& ended) {
    for (const JobId& id : ended) {
      const Job* job = workers_.FindJob(id);
      if (job != nullptr && job->guest) FinishJob(id);
    }
  });
  PRISM_RETURN_IF_ERROR(cluster_->Start(
      std::move(self), [this](rpc::HeartbeatRequest* r) { FillReport(r); },
      [this](const std::string& why) {
        PRISM_LOG_ERROR("the control service holds this node as dead ({}): stopping", why);
        Stop();
      }));
  if (!cluster_->address().empty()) {
    PRISM_RETURN_IF_ERROR(WriteSessionClusterAddress(config_.session_dir, cluster_->address()));
  }
  RefreshClusterView();
  control_.set_node_index(cluster_->node_index());
  leases_.set_node_address(cluster_->node_address());
  actors_.set_node_address(cluster_->node_address());
  WatchSignals();
  WatchLifeline();
  Accept();
  PRISM_LOG_INFO("node {} listening on {} with {} and a {} MiB object store", node_id_.Hex(),
                 socket_path_, config_.resources.ToString(), store_->capacity() >> 20);
  if (config_.ready_fd >= 0) {
    char ok = 'R';
    if (::write(config_.ready_fd, &ok, 1) != 1) PRISM_LOG_WARN("cannot signal readiness");
    ::close(config_.ready_fd);
    config_.ready_fd = -1;
  }
  return Status::OK();
}

void NodeDaemon::WatchSignals() {
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.add(SIGCHLD);
  signals_.async_wait([this](const asio::error_code& ec, int sig) {
    if (ec || stopped_) return;
    if (sig == SIGCHLD) {
      workers_.Reap([this](const WorkerId& id, const std::string& how) { RemoveWorker(id, how); });
      WatchSignals();
      return;
    }
    PRISM_LOG_INFO("signal {}: stopping", sig);
    Stop();
  });
}

void NodeDaemon::WatchLifeline() {
  if (config_.lifeline_fd < 0) return;
  if (!lifeline_)
    lifeline_ = std::make_unique<asio::posix::stream_descriptor>(io_, config_.lifeline_fd);
  auto buf = std::make_shared<std::array<char, 64>>();
  lifeline_->async_read_some(asio::buffer(*buf), [this, buf](const asio::error_code& ec, size_t) {
    if (stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      PRISM_LOG_INFO("the driver that started this daemon is gone: stopping");
      Stop();
      return;
    }
    WatchLifeline();
  });
}

void NodeDaemon::Accept() {
  acceptor_->async_accept([this](const asio::error_code& ec, rpc::UnixSocket sock) {
    if (stopped_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors, most likely: back off instead of spinning.
      PRISM_LOG_WARN("accept: {}; retrying in 100 ms", ec.message());
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      timer->async_wait([this, timer](const asio::error_code&) {
        if (!stopped_) Accept();
      });
      return;
    }
    auto conn = rpc::Connection::Create(std::move(sock), config_.max_frame_bytes);
    conns_[conn] = Peer{};
    conn->user_data = &conns_[conn];
    // A peer that never introduces itself does not get to hold a connection.
    auto timer = std::make_shared<asio::steady_timer>(io_, config_.hello_timeout);
    std::weak_ptr<rpc::Connection> weak = conn;
    timer->async_wait([this, timer, weak](const asio::error_code& ec) {
      auto c = weak.lock();
      if (ec || stopped_ || !c || c->closed()) return;
      if (static_cast<Peer*>(c->user_data)->role == rpc::ROLE_UNSPECIFIED) {
        c->Close(Status::Timeout("no Hello within " +
                                 std::to_string(config_.hello_timeout.count()) + " ms"));
      }
    });
    conn->Start([this](rpc::Connection& c, rpc::Envelope& m) { OnMessage(c, m); },
                [this](rpc::Connection& c, const Status& st) { OnClosed(c, st); });
    Accept();
  });
}

void NodeDaemon::OnMessage(rpc::Connection& conn, rpc::Envelope& msg) {
  auto* peer = static_cast<Peer*>(conn.user_data);
  if (peer == nullptr) return;
  if (peer->role == rpc::ROLE_UNSPECIFIED) {
    rpc::Envelope reply;
    Status st = msg.has_hello() ? HandleHello(conn, msg.hello(), reply.mutable_welcome())
                                : Status::ProtocolError("the first frame must be Hello");
    if (!st.ok()) {
      PRISM_LOG_WARN("refused a connection (pid {}): {}", conn.peer_pid(), st.ToString());
      reply.mutable_refused()->set_reason(st.ToString());
      conn.Send(reply);
      conn.Close(st);
      return;
    }
    if (peer->store_client != 0) {
      Status sent = conn.SendWithFd(reply, store_->fd());
      if (!sent.ok()) {
        PRISM_LOG_WARN("cannot hand the object store to pid {}: {}", conn.peer_pid(),
                       sent.ToString());
        conn.Close(sent);
        return;
      }
    } else {
      conn.Send(reply);
    }
    if (peer->role == rpc::ROLE_WORKER) Schedule();
    return;
  }
  if (peer->role == rpc::ROLE_REMOTE_CALLER && !RemoteCallerMay(msg.body_case())) {
    return rpc::SendErrorFrame(
        conn, 0,
        Status::PermissionDenied("message kind " + std::to_string(msg.body_case()) +
                                 " is not accepted from another node's process (it may ask for "
                                 "leases and follow actors only)"));
  }
  if (msg.body_case() >= rpc::Envelope::kStoreCreate &&
      msg.body_case() <= rpc::Envelope::kStoreDelete) {
    if (peer->store_client == 0) {
      return rpc::SendErrorFrame(
          conn, 0,
          Status::InvalidArgument(
              "object store requests need a connection opened with want_store"));
    }
    store_service_->Handle(conn, peer->store_client, msg);
    return;
  }
  if (OnControlMessage(conn, *peer, msg)) return;
  switch (msg.body_case()) {
    case rpc::Envelope::kRequestLease:
      if (peer->role == rpc::ROLE_CLIENT) break;
      if (peer->role == rpc::ROLE_REMOTE_CALLER) {
        GuestLeaseRequest(conn, peer->job, msg.request_lease());
      } else {
        leases_.Request(conn, peer->job, msg.request_lease());
      }
      return;
    case rpc::Envelope::kCancelLeaseRequest:
      leases_.Cancel(conn, msg.cancel_lease_request().request_id());
      return;
    case rpc::Envelope::kReturnLease:
      leases_.Return(conn, msg.return_lease());
      return;
    case rpc::Envelope::kStatusRequest:
      SendStatus(conn, msg.status_request().request_id());
      return;
    case rpc::Envelope::kTaskReply:
      if (peer->role != rpc::ROLE_WORKER) break;
      HandleActorCreated(*peer, msg.task_reply());
      return;
    case rpc::Envelope::kWorkerOutput: {
      if (peer->role != rpc::ROLE_WORKER) break;
      Job* job = workers_.FindJob(peer->job);
      if (job == nullptr) return;
      if (job->driver != nullptr) {
        job->driver->Send(msg);  // a driver that left (detached actors) gets nothing
      } else if (job->guest) {
        ForwardGuestOutput(*job, msg);
      }
      return;
    }
    case rpc::Envelope::kWorkerBlocked: {
      if (peer->role != rpc::ROLE_WORKER) break;
      if (Worker* w = workers_.Find(peer->worker); w != nullptr)
        leases_.SetBlocked(*w, msg.worker_blocked().blocked());
      return;
    }
    case rpc::Envelope::kStopRequest:
      PRISM_LOG_INFO("stop requested by pid {}", conn.peer_pid());
      asio::post(io_, [this] { Stop(); });
      return;
    case rpc::Envelope::kHello:
      rpc::SendErrorFrame(conn, 0,
                          Status::ProtocolError("Hello was already accepted on this connection"));
      return;
    default:
      break;
  }
  rpc::SendErrorFrame(
      conn, 0,
      Status::InvalidArgument("message kind " + std::to_string(msg.body_case()) +
                              " is not accepted by the node daemon from this peer"));
}

bool NodeDaemon::OnControlMessage(rpc::Connection& conn, const Peer& peer, rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kCreateActor:
      if (!IsLocalProcess(peer)) return false;
      HandleCreateActor(conn, peer, msg.create_actor());
      return true;
    case rpc::Envelope::kCreatePlacementGroup:
      if (!IsLocalProcess(peer)) return false;
      HandleCreatePlacementGroup(conn, peer, msg.create_placement_group());
      return true;
    case rpc::Envelope::kPlacementGroupRequest:
      HandlePlacementGroupRequest(conn, peer, msg.placement_group_request());
      return true;
    case rpc::Envelope::kKvRequest: {
      if (!IsLocalProcess(peer)) return false;
      // The table is the head's: another node's answer comes back later, on this loop.
      auto from = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
      const uint64_t id = msg.kv_request().request_id();
      cluster_->Kv(msg.kv_request(), [from, id](Result<rpc::KvReply> reply) {
        if (from->closed()) return;
        if (!reply.ok()) return rpc::SendErrorFrame(*from, id, reply.status());
        rpc::Envelope env;
        *env.mutable_kv_reply() = std::move(*reply);
        from->Send(env);
      });
      return true;
    }
    case rpc::Envelope::kKillActor: {
      HandleKillActor(msg.kill_actor());
      uint64_t rid = msg.kill_actor().request_id();
      if (rid == 0) return true;
      if (const ActorRecord* a = actors_.Find(msg.kill_actor().actor_id()); a != nullptr) {
        actors_.SendUpdate(conn, *a, rid);
      } else {
        rpc::SendErrorFrame(conn, rid, Status::NotFound("no such actor"));
      }
      return true;
    }
    case rpc::Envelope::kSubscribeActor:
      actors_.Subscribe(msg.subscribe_actor().actor_id(), conn);
      return true;
    case rpc::Envelope::kGetActorByName: {
      const auto& req = msg.get_actor_by_name();
      ActorRecord* a = actors_.FindByName(req.ray_namespace(), req.name());
      if (a == nullptr) {
        rpc::SendErrorFrame(
            conn, req.request_id(),
            Status::NotFound("no live actor is named '" + req.name() + "'" +
                             (req.ray_namespace().empty()
                                  ? ""
                                  : " in namespace '" + req.ray_namespace() + "'")));
        return true;
      }
      actors_.Subscribe(*a, conn);
      actors_.SendUpdate(conn, *a, req.request_id());
      return true;
    }
    default:
      return false;
  }
}

void NodeDaemon::ScheduleAfter(std::chrono::milliseconds delay) {
  if (stopped_) return;
  if (!retry_timer_) retry_timer_ = std::make_unique<asio::steady_timer>(io_);
  // (A pass already due sooner covers this one.)
  auto at = std::chrono::steady_clock::now() + delay;
  if (retry_timer_->expiry() > std::chrono::steady_clock::now() && retry_timer_->expiry() <= at)
    return;
  retry_timer_->expires_at(at);
  retry_timer_->async_wait([this](const asio::error_code& ec) {
    if (!ec && !stopped_) Schedule();
  });
}

void NodeDaemon::KillWorker(const WorkerId& id, const std::string& why) {
  workers_.Signal(id);
  RemoveWorker(id, why);
}

void NodeDaemon::RemoveWorker(const WorkerId& id, const std::string& why) {
  std::optional<Worker> w = workers_.Take(id);
  if (!w) return;
  leases_.WorkerRemoved(*w);
  if (w->state != WorkerPool::State::kStarting || w->conn) WorkerGone(w->id);
  if (!w->actor.IsNil() && actors_.ProcessDied(w->actor, why))
    RequestActorProcess(*actors_.Find(w->actor));
  if (w->conn) {
    auto c = conns_.find(w->conn);
    if (c != conns_.end()) c->second.role = rpc::ROLE_CLIENT;  // its close is no longer a worker's
    w->conn->Close(Status::Unavailable("worker removed: " + why));
  }
  ::unlink(w->socket_path.c_str());
  Schedule();
}

void NodeDaemon::OnClosed(rpc::Connection& conn, const Status& why) {
  auto self = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
  auto it = conns_.find(self);
  if (it == conns_.end()) return;
  Peer peer = it->second;
  conns_.erase(it);
  if (stopped_) return;
  if (peer.store_client != 0) store_->ClientGone(peer.store_client);
  // Leases this connection held: their workers ran tasks for an owner that is gone.
  // (Removing one may remove others: a worker's own leases go with it. KillWorker skips those.)
  for (const WorkerId& w : leases_.WorkersHeldBy(&conn))
    KillWorker(w, "its lease holder disconnected");
  if (peer.role == rpc::ROLE_WORKER) {
    KillWorker(peer.worker, "its connection closed: " + why.message());
  } else if (peer.role == rpc::ROLE_DRIVER) {
    WorkerGone(peer.worker);
    FinishJob(peer.job);
  }
  Schedule();
}

bool NodeDaemon::IsAlive(const WorkerId& id) const {
  if (workers_.all().count(id) > 0) return true;
  for (const auto& [c, p] : conns_) {
    if (p.role == rpc::ROLE_DRIVER && p.worker == id) return true;
  }
  return false;
}

void NodeDaemon::WorkerGone(const WorkerId& id) {
  if (id.IsNil()) return;
  store_->OwnerGone(id);
  // Actors fate-share with their owner unless detached.
  for (const TaskId& aid : actors_.Live([&](const ActorRecord& a) {
         return !a.detached() && a.spec.actor_creation().owner().worker_id() == id.Binary();
       })) {
    rpc::KillActor k;
    k.set_actor_id(aid.Binary());
    k.set_no_restart(true);
    k.set_reason("its owner (the process that created it) died or exited");
    HandleKillActor(k);
  }
  rpc::Envelope env;
  env.mutable_worker_died()->set_worker_id(id.Binary());
  for (auto& [c, p] : conns_) {
    if ((p.role == rpc::ROLE_DRIVER || p.role == rpc::ROLE_WORKER) && p.worker != id) c->Send(env);
  }
}

void NodeDaemon::HandleCreateActor(rpc::Connection& conn, const Peer& peer,
                                   const rpc::CreateActor& req) {
  Result<ActorDirectory::Created> created =
      actors_.Create(peer.job, workers_.HasJob(peer.job), req);
  if (!created.ok()) return rpc::SendErrorFrame(conn, req.request_id(), created.status());
  ActorRecord& a = *created->actor;
  actors_.Subscribe(a, conn);
  actors_.SendUpdate(conn, a, req.request_id());
  if (!created->is_new) return;  // a retry of the task that created it: the same actor
  RequestActorProcess(a);
  Schedule();
}

void NodeDaemon::RequestActorProcess(const ActorRecord& a) {
  LeaseRequest lr;
  lr.job = a.job;
  lr.shape = a.shape;
  lr.actor = a.id;
  lr.placement = a.placement;
  (void)EnvFromProto(a.spec.actor_creation().env(), &lr.env,
                     &lr.env_key);  // checked when it was created
  leases_.Add(std::move(lr));
}

void NodeDaemon::HandleActorCreated(const Peer& peer, const rpc::TaskReply& reply) {
  Worker* w = workers_.Find(peer.worker);
  if (w == nullptr || w->actor.IsNil()) return;
  ActorRecord* a = actors_.Find(w->actor);
  if (a == nullptr || a->worker != peer.worker || a->dead()) return;
  if (reply.error().kind() != rpc::ERROR_NONE) {
    const auto& e = reply.error();
    std::string why = e.kind() == rpc::ERROR_TASK
                          ? "its constructor raised " + e.type_name() + ": " + e.message()
                          : "it could not be created: " + e.message();
    a->kill_requested = true;
    actors_.Dead(*a, why);
    KillWorker(peer.worker, "its actor failed to start");
    return;
  }
  actors_.Alive(*a);
}

void NodeDaemon::HandleKillActor(const rpc::KillActor& req) {
  ActorRecord* a = actors_.Find(req.actor_id());
  if (a == nullptr || a->dead()) return;
  std::string reason = req.reason().empty() ? "it was killed" : req.reason();
  actors_.RequestKill(*a, req.no_restart(), reason);
  if (!a->worker.IsNil() && workers_.Find(a->worker) != nullptr) {
    KillWorker(a->worker, "its actor was killed: " + reason);  // restarts it, or not
  } else if (req.no_restart()) {
    actors_.Dead(*a, reason);
  }
}

void NodeDaemon::MaybeEraseJob(const JobId& id) {
  Job* job = workers_.FindJob(id);
  if (job == nullptr || !job->ended) return;
  if (!actors_.Live([&](const ActorRecord& a) { return a.job == id && a.detached(); }).empty())
    return;
  job->ended = false;
  FinishJob(id);
}

bool NodeDaemon::ActorWaits(const TaskId& actor) {
  const ActorRecord* a = actors_.Find(actor);
  return a != nullptr && !a->dead();
}

void NodeDaemon::ActorUnplaceable(const TaskId& actor, const std::string& why) {
  if (ActorRecord* a = actors_.Find(actor); a != nullptr) actors_.Dead(*a, why);
}

void NodeDaemon::ActorPlaced(const TaskId& actor, Worker& worker, uint64_t lease,
                             const Allocation& alloc) {
  // The worker becomes the actor's process: it runs the creation task and answers on its
  // daemon connection.
  ActorRecord* found = actors_.Find(actor);
  PRISM_CHECK(found != nullptr);  // the pass placed it because ActorWaits found it
  ActorRecord& a = *found;
  worker.actor = a.id;
  a.worker = worker.id;
  a.socket_path = worker.socket_path;
  rpc::Envelope push;
  auto* p = push.mutable_push_task();
  p->set_lease_id(lease);
  *p->mutable_spec() = a.spec;
  p->mutable_spec()->set_attempt(a.num_restarts);  // > 0: a restart
  for (const DeviceShare& d : alloc.devices) {
    auto* out = p->add_devices();
    out->set_resource(d.resource);
    out->set_index(d.index);
    out->set_milli(d.milli);
  }
  worker.conn->Send(push);
}

void NodeDaemon::ReserveGroups() {
  if (!pool_status_.ok()) return;
  groups_.Reserve([](PlacementGroupRecord& g) { PlacementGroups::AnswerWaiters(g); });
}

void NodeDaemon::HandleCreatePlacementGroup(rpc::Connection& conn, const Peer& peer,
                                            const rpc::CreatePlacementGroup& req) {
  if (!workers_.HasJob(peer.job))
    return rpc::SendErrorFrame(conn, req.request_id(),
                               Status::NotFound("the caller's job has ended"));
  Result<uint64_t> id = groups_.Add(peer.job, req, config_.fixed_size && pool_status_.ok());
  if (!id.ok()) return rpc::SendErrorFrame(conn, req.request_id(), id.status());
  Schedule();  // reserves it now if it fits
  rpc::Envelope env;
  PlacementGroups::Fill(*groups_.Find(*id), env.mutable_placement_group_info());
  env.mutable_placement_group_info()->set_request_id(req.request_id());
  conn.Send(env);
}

void NodeDaemon::HandlePlacementGroupRequest(rpc::Connection& conn, const Peer& peer,
                                             const rpc::PlacementGroupRequest& req) {
  if (!IsLocalProcess(peer) && req.op() != rpc::PlacementGroupRequest::GET_BY_NAME) {
    return rpc::SendErrorFrame(
        conn, req.request_id(),
        Status::PermissionDenied(
            "only drivers and workers may wait for or remove placement groups"));
  }
  PlacementGroupRecord* found = nullptr;
  if (req.op() == rpc::PlacementGroupRequest::GET_BY_NAME) {
    found = groups_.FindByName(req.name());
    if (found == nullptr) {
      return rpc::SendErrorFrame(
          conn, req.request_id(),
          Status::NotFound("no placement group is named '" + req.name() + "'"));
    }
  } else {
    found = groups_.Find(req.id());
    if (found == nullptr) {
      return rpc::SendErrorFrame(
          conn, req.request_id(),
          Status::NotFound("placement group " + std::to_string(req.id()) +
                           " does not exist (it was removed, or never created)"));
    }
  }
  PlacementGroupRecord& g = *found;
  rpc::Envelope env;
  auto* info = env.mutable_placement_group_info();
  switch (req.op()) {
    case rpc::PlacementGroupRequest::WAIT:
      if (g.state != rpc::PG_CREATED) {
        // Answered when it is created, or PENDING at the deadline.
        groups_.Wait(g, conn, req.request_id(),
                     std::chrono::milliseconds(req.timeout_ms() == 0 ? 30000 : req.timeout_ms()),
                     io_);
        return;
      }
      PlacementGroups::Fill(g, info);
      break;
    case rpc::PlacementGroupRequest::REMOVE:
      PlacementGroups::Fill(g, info);
      info->set_state(rpc::PG_REMOVED);
      RemovePlacementGroup(g.id, "it was removed");
      break;
    case rpc::PlacementGroupRequest::GET_BY_NAME:
      PlacementGroups::Fill(g, info);
      break;
    default:
      return rpc::SendErrorFrame(conn, req.request_id(),
                                 Status::InvalidArgument("unknown placement group request"));
  }
  info->set_request_id(req.request_id());
  conn.Send(env);
}

void NodeDaemon::RemovePlacementGroup(uint64_t id, const std::string& why) {
  std::optional<PlacementGroupRecord> taken =
      groups_.Take(id);  // first: leases in it give nothing back to its pools now
  if (!taken) return;
  PlacementGroupRecord g = std::move(*taken);
  PRISM_LOG_INFO("placement group {} removed: {}", id, why);
  const std::string label =
      "placement group " + std::to_string(id) + (g.name.empty() ? "" : " ('" + g.name + "')");
  PlacementGroups::FailWaiters(g, Status::NotFound(label + " was removed before it was created"));
  // Its actors die (no restart: their resources are gone), and its tasks' workers end.
  for (const TaskId& aid :
       actors_.Live([&](const ActorRecord& a) { return a.placement.placement_group() == id; })) {
    rpc::KillActor k;
    k.set_actor_id(aid.Binary());
    k.set_no_restart(true);
    k.set_reason("its " + label + " was removed");
    HandleKillActor(k);
  }
  for (const WorkerId& w : leases_.WorkersInGroup(id))
    KillWorker(w, "its " + label + " was removed");
  // Only now, with everything that used them gone, do its resources go back to the node.
  for (const Allocation& a : g.reserved) node_pool_.Free(a);
  Schedule();
}

void NodeDaemon::FinishJob(const JobId& id) {
  Job* job = workers_.FindJob(id);
  if (job == nullptr) return;
  if (!actors_.Live([&](const ActorRecord& a) { return a.job == id && a.detached(); }).empty()) {
    // Its detached actors outlive the driver: keep what restarting them needs, stop the rest.
    PRISM_LOG_INFO("job {}: driver gone, detached actors stay", JobIdToInt(id));
    job->ended = true;
    job->driver = nullptr;
    if (!job->guest) {
      control_.FinishJob(id);
      cluster_->ReportJobFinished(id);
    }
    std::vector<WorkerId> ws;
    for (auto& [wid, w] : workers_.all()) {
      const ActorRecord* hosted = w.actor.IsNil() ? nullptr : actors_.Find(w.actor);
      bool keep = hosted != nullptr && hosted->detached();
      if (w.job == id && !keep) ws.push_back(wid);
    }
    for (const WorkerId& w : ws) KillWorker(w, "its job finished");
    // Its groups go too, except those its detached actors live in.
    std::vector<uint64_t> groups;
    for (auto& [gid, g] : groups_.all()) {
      const uint64_t group = gid;
      bool used = !actors_
                       .Live([&](const ActorRecord& a) {
                         return a.placement.placement_group() == group && a.detached();
                       })
                       .empty();
      if (g.job == id && !used && !g.detached) groups.push_back(gid);
    }
    for (uint64_t gid : groups) RemovePlacementGroup(gid, "its job finished");
    return;
  }
  PRISM_LOG_INFO("job {} finished", JobIdToInt(id));
  const bool guest = job->guest;
  workers_.EraseJob(id);  // first, so that rescheduling below starts no worker for it
  if (!guest) {
    control_.FinishJob(id);
    cluster_->ReportJobFinished(id);
  }
  std::vector<uint64_t> groups;
  for (auto& [gid, g] : groups_.all()) {
    if (g.job == id && !g.detached) groups.push_back(gid);  // (detached ones live until removed)
  }
  for (uint64_t gid : groups) RemovePlacementGroup(gid, "its job finished");
  std::vector<WorkerId> ws;
  for (auto& [wid, w] : workers_.all()) {
    if (w.job == id) ws.push_back(wid);
  }
  for (const WorkerId& w : ws) KillWorker(w, "its job finished");
}

void NodeDaemon::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (cluster_) cluster_->Stop("its daemon stopped");
  asio::error_code ec;
  if (acceptor_) acceptor_->close(ec);
  if (retry_timer_) retry_timer_->cancel();
  signals_.cancel(ec);
  if (lifeline_) lifeline_->close(ec);
  leases_.Stop();
  std::vector<std::shared_ptr<rpc::Connection>> open;
  for (auto& [conn, peer] : conns_) open.push_back(conn);
  for (auto& conn : open) conn->Close(Status::Cancelled("the node daemon is stopping"));
  workers_.StopAll();
  // Spills and restores still queued are dropped (nothing runs their completions now), the one
  // running ends, and only then does the arena go.
  if (disk_) disk_->Stop(/*discard_queued=*/true);
  store_service_.reset();
  store_.reset();  // unmaps the arena and removes spill files
  ::unlink(socket_path_.c_str());
  ::unlink((config_.session_dir + "/cluster").c_str());
  if (config_.remove_session_dir && !config_.session_dir.empty()) {
    std::error_code fec;
    std::filesystem::remove_all(config_.session_dir, fec);
  }
  io_.stop();
}

int RunNodeDaemon(NodeDaemonConfig config) {
  InitLogging("daemon", config.log_level);
  ::signal(SIGPIPE, SIG_IGN);
  asio::io_context io;
  ProcessWorkerLauncher launcher;
  const int ready_fd = config.ready_fd;
  const std::string own_dir = config.remove_session_dir ? config.session_dir : "";
  NodeDaemon daemon(io, std::move(config), launcher);
  Status st = daemon.Start();
  if (!st.ok()) {
    PRISM_LOG_ERROR("the node daemon cannot start: {}", st.ToString());
    std::error_code ignored;
    if (!own_dir.empty()) std::filesystem::remove_all(own_dir, ignored);  // nothing in it to keep
    if (ready_fd >= 0) {
      // Who started it hears why ('E' and the reason) rather than only that it did not.
      std::string why = "E" + st.ToString();
      (void)!::write(ready_fd, why.data(), why.size());
    }
    return 1;
  }
  io.run();
  daemon.Stop();
  return 0;
}

}  // namespace prism

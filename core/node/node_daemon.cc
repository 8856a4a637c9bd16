#include "node/node_daemon.h"

#include "base/ids.h"
#include "base/logging.h"
#include "base/process_info.h"
#include "node/session.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace prism {
namespace {

// Whether `ancestor` is `pid`'s parent, grandparent, ... (from /proc/<pid>/stat).
bool IsDescendantOf(pid_t pid, pid_t ancestor) {
  for (int depth = 0; depth < 16 && pid > 1; ++depth) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    auto close = text.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) return false;
    std::istringstream rest(text.substr(close + 2));
    char state;
    pid_t parent = 0;
    if (!(rest >> state >> parent)) return false;
    if (parent == ancestor) return true;
    pid = parent;
  }
  return false;
}

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return std::string("killed by signal ") + std::to_string(WTERMSIG(wait_status)) + " (" +
           strsignal(WTERMSIG(wait_status)) + ")";
  }
  return "ended (status " + std::to_string(wait_status) + ")";
}

// Environment variables from a request, checked, and the key that names that environment.
Status EnvFromProto(const google::protobuf::RepeatedPtrField<rpc::EnvVar>& vars,
                    std::map<std::string, std::string>* env, std::string* key) {
  for (const auto& v : vars) {
    if (v.name().empty() || v.name().find('=') != std::string::npos ||
        v.name().find('\0') != std::string::npos || v.value().find('\0') != std::string::npos ||
        v.name().rfind("PRISM_", 0) == 0) {
      return Status::InvalidArgument("invalid environment variable '" + v.name() + "'");
    }
    (*env)[v.name()] = v.value();
  }
  key->clear();
  for (const auto& [k, v] : *env) *key += k + "=" + v + std::string(1, '\0');
  return Status::OK();
}

}  // namespace

std::string DaemonSocketPath(const std::string& session_dir) { return session_dir + "/daemon.sock"; }

NodeDaemon::NodeDaemon(asio::io_context& io, NodeDaemonConfig config, WorkerLauncher& launcher)
    : io_(io),
      config_(std::move(config)),
      launcher_(launcher),
      node_id_(RandomUniqueId()),
      signals_(io) {
  if (config_.max_workers <= 0) {
    config_.max_workers = static_cast<int>(4 * config_.resources.Get(kCpu) / kMilli) + 4;
  }
  auto pool = ResourcePool::Create(config_.resources);
  if (pool.ok() && config_.gpu_topology) {
    const gpu::Topology& t = *config_.gpu_topology;
    Status graph = pool->SetDeviceGraph(kGpu, DeviceGraph{t.BandwidthMatrix(), t.NvLinkMatrix()});
    if (!graph.ok()) pool = Status::InvalidArgument("the GPU topology does not fit: " + graph.message());
  }
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v != nullptr) {
    std::stringstream in(v);
    for (std::string item; std::getline(in, item, ',');) visible_devices_.push_back(item);
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
  self_exe_fd_ = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  self_build_id_ = SelfBuildId();
  socket_path_ = DaemonSocketPath(config_.session_dir);
  ObjectStoreConfig store_config;
  store_config.capacity = config_.object_store_memory > 0 ? config_.object_store_memory
                                                          : DefaultObjectStoreCapacity();
  store_config.spill_dir = config_.session_dir + "/spill";
  store_config.prefault = config_.object_store_prefault;
  disk_ = std::make_unique<DiskIoThread>(io_);
  store_config.run_io = [disk = disk_.get()](std::function<void()> io, std::function<void()> then) {
    disk->Run(std::move(io), std::move(then));
  };
  PRISM_ASSIGN_OR_RETURN(store_, ObjectStore::Open(std::move(store_config)));
  store_service_ = std::make_unique<StoreService>(*store_, [this](const WorkerId& id) { return IsAlive(id); });
  PRISM_ASSIGN_OR_RETURN(acceptor_, rpc::Listen(io_, socket_path_));
  control_.AddNode(NodeRecord{node_id_, config_.resources, socket_path_});
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
      ReapChildren();
      WatchSignals();
      return;
    }
    PRISM_LOG_INFO("signal {}: stopping", sig);
    Stop();
  });
}

void NodeDaemon::WatchLifeline() {
  if (config_.lifeline_fd < 0) return;
  if (!lifeline_) lifeline_ = std::make_unique<asio::posix::stream_descriptor>(io_, config_.lifeline_fd);
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

void NodeDaemon::SendError(rpc::Connection& conn, uint64_t request_id, const Status& st) {
  SendErrorFrame(conn, request_id, st);
}

void NodeDaemon::RejectLease(rpc::Connection& conn, uint64_t request_id, rpc::ErrorKind kind,
                             const std::string& why) {
  rpc::Envelope env;
  env.mutable_lease_rejected()->set_request_id(request_id);
  env.mutable_lease_rejected()->set_kind(kind);
  env.mutable_lease_rejected()->set_message(why);
  conn.Send(env);
}

void NodeDaemon::TellQueued(LeaseRequest& req) {
  if (req.told_queued || !req.from || req.from->closed()) return;  // (actors: no caller to tell)
  rpc::Envelope env;
  env.mutable_lease_queued()->set_request_id(req.request_id);
  req.from->Send(env);
  req.told_queued = true;
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
        PRISM_LOG_WARN("cannot hand the object store to pid {}: {}", conn.peer_pid(), sent.ToString());
        conn.Close(sent);
        return;
      }
    } else {
      conn.Send(reply);
    }
    if (peer->role == rpc::ROLE_WORKER) Schedule();
    return;
  }
  if (msg.body_case() >= rpc::Envelope::kStoreCreate && msg.body_case() <= rpc::Envelope::kStoreDelete) {
    if (peer->store_client == 0) {
      return SendError(conn, 0, Status::InvalidArgument("object store requests need a connection opened with want_store"));
    }
    store_service_->Handle(conn, peer->store_client, msg);
    return;
  }
  switch (msg.body_case()) {
    case rpc::Envelope::kRequestLease:
      if (peer->role == rpc::ROLE_CLIENT) break;
      HandleRequestLease(conn, *peer, msg.request_lease());
      return;
    case rpc::Envelope::kCancelLeaseRequest: {
      uint64_t rid = msg.cancel_lease_request().request_id();
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (it->from.get() == &conn && it->request_id == rid) {
          pending_.erase(it);
          break;
        }
      }
      return;
    }
    case rpc::Envelope::kReturnLease:
      HandleReturnLease(conn, msg.return_lease());
      return;
    case rpc::Envelope::kStatusRequest:
      SendStatus(conn, msg.status_request().request_id());
      return;
    case rpc::Envelope::kCreateActor:
      if (peer->role == rpc::ROLE_CLIENT) break;
      HandleCreateActor(conn, *peer, msg.create_actor());
      return;
    case rpc::Envelope::kCreatePlacementGroup:
      if (peer->role == rpc::ROLE_CLIENT) break;
      HandleCreatePlacementGroup(conn, *peer, msg.create_placement_group());
      return;
    case rpc::Envelope::kKvRequest: {
      if (peer->role == rpc::ROLE_CLIENT) break;
      Result<rpc::KvReply> reply = kv_.Apply(msg.kv_request());
      if (!reply.ok()) return SendError(conn, msg.kv_request().request_id(), reply.status());
      rpc::Envelope env;
      *env.mutable_kv_reply() = std::move(*reply);
      conn.Send(env);
      return;
    }
    case rpc::Envelope::kPlacementGroupRequest:
      HandlePlacementGroupRequest(conn, *peer, msg.placement_group_request());
      return;
    case rpc::Envelope::kTaskReply:
      if (peer->role != rpc::ROLE_WORKER) break;
      HandleActorCreated(*peer, msg.task_reply());
      return;
    case rpc::Envelope::kWorkerOutput: {
      if (peer->role != rpc::ROLE_WORKER) break;
      auto job = jobs_.find(peer->job);
      if (job != jobs_.end() && job->second.driver != nullptr) {
        job->second.driver->Send(msg);  // a driver that left (detached actors) gets nothing
      }
      return;
    }
    case rpc::Envelope::kWorkerBlocked: {
      if (peer->role != rpc::ROLE_WORKER) break;
      auto w = workers_.find(peer->worker);
      if (w == workers_.end() || w->second.lease_id == 0) return;
      auto l = leases_.find(w->second.lease_id);
      if (l == leases_.end()) return;
      Lease& lease = l->second;
      ResourcePool* pool = PoolOf(lease);
      if (pool == nullptr) return;
      if (msg.worker_blocked().blocked() && !lease.blocked) {
        lease.blocked = true;
        lease.lent = lease.alloc.amounts.Only(kCpu);
        pool->Lend(lease.lent);
        Schedule();  // its CPUs, and its place under the worker cap, may run what it waits for
      } else if (!msg.worker_blocked().blocked() && lease.blocked) {
        lease.blocked = false;
        pool->Reclaim(lease.lent);  // back, even if that overcommits the node for a while
        lease.lent = ResourceSet();
      }
      return;
    }
    case rpc::Envelope::kKillActor: {
      HandleKillActor(msg.kill_actor());
      uint64_t rid = msg.kill_actor().request_id();
      if (rid == 0) return;
      auto it = TaskId::IsValidBinary(msg.kill_actor().actor_id())
                    ? actors_.find(TaskId::FromBinary(msg.kill_actor().actor_id()))
                    : actors_.end();
      if (it == actors_.end()) {
        SendError(conn, rid, Status::NotFound("no such actor"));
      } else {
        SendActorUpdate(conn, it->second, rid);
      }
      return;
    }
    case rpc::Envelope::kSubscribeActor: {
      const std::string& bin = msg.subscribe_actor().actor_id();
      auto it = TaskId::IsValidBinary(bin) ? actors_.find(TaskId::FromBinary(bin)) : actors_.end();
      if (it == actors_.end()) {
        // Its callers must not wait forever: an actor this daemon never had is a dead one.
        rpc::Envelope env;
        auto* u = env.mutable_actor_update();
        u->set_actor_id(bin);
        u->set_state(rpc::ACTOR_DEAD);
        u->set_death_cause("this cluster has no such actor");
        conn.Send(env);
        return;
      }
      Subscribe(it->second, conn);
      SendActorUpdate(conn, it->second, 0);
      return;
    }
    case rpc::Envelope::kGetActorByName: {
      const auto& req = msg.get_actor_by_name();
      auto it = actor_names_.find(NamespacedName(req.ray_namespace(), req.name()));
      if (it == actor_names_.end()) {
        SendError(conn, req.request_id(),
                  Status::NotFound("no live actor is named '" + req.name() + "'" +
                                   (req.ray_namespace().empty() ? "" : " in namespace '" + req.ray_namespace() + "'")));
        return;
      }
      Actor& a = actors_.at(it->second);
      Subscribe(a, conn);
      SendActorUpdate(conn, a, req.request_id());
      return;
    }
    case rpc::Envelope::kStopRequest:
      PRISM_LOG_INFO("stop requested by pid {}", conn.peer_pid());
      asio::post(io_, [this] { Stop(); });
      return;
    case rpc::Envelope::kHello:
      SendError(conn, 0, Status::ProtocolError("Hello was already accepted on this connection"));
      return;
    default:
      break;
  }
  SendError(conn, 0,
            Status::InvalidArgument("message kind " + std::to_string(msg.body_case()) +
                                    " is not accepted by the node daemon from this peer"));
}

Status NodeDaemon::HandleHello(rpc::Connection& conn, const rpc::Hello& hello,
                               rpc::Welcome* welcome) {
  PRISM_RETURN_IF_ERROR(rpc::CheckHello(hello, config_.token));
  auto* peer = static_cast<Peer*>(conn.user_data);
  welcome->set_node_id(node_id_.Binary());
  welcome->set_session_dir(config_.session_dir);
  if (hello.want_store()) {
    peer->store_client = next_store_client_++;
    welcome->set_store_capacity(store_->capacity());
  }
  switch (hello.role()) {
    case rpc::ROLE_DRIVER: {
      if (!WorkerId::IsValidBinary(hello.worker_id()) || IsAlive(WorkerId::FromBinary(hello.worker_id()))) {
        return Status::InvalidArgument("a driver needs a worker id of its own (16 bytes, not in use)");
      }
      pid_t pid = conn.peer_pid();
      if (pid <= 0) return Status::PermissionDenied("cannot identify the driver process");
      if (hello.worker_argv_size() > 256 || hello.worker_launch_prefix_size() > 256) {
        return Status::InvalidArgument("worker_argv and worker_launch_prefix take at most 256 arguments");
      }
      std::string exe = "/proc/" + std::to_string(pid) + "/exe";
      int fd = ::open(exe.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return Status::IOError("cannot open the driver's executable " + exe);
      auto launch = ReadLaunchInfo(pid);
      if (!launch.ok()) {
        ::close(fd);
        return launch.status();
      }
      Job job;
      job.id = control_.AddJob(pid);
      job.exe_fd = fd;
      job.build_id = hello.build_id();
      job.argv = std::move(launch->argv);
      if (hello.worker_argv_size() > 0) job.argv.assign(hello.worker_argv().begin(), hello.worker_argv().end());
      job.code_search_path.assign(hello.code_search_path().begin(), hello.code_search_path().end());
      job.python_executable = hello.python_executable();
      job.launch_prefix.assign(hello.worker_launch_prefix().begin(), hello.worker_launch_prefix().end());
      job.timeline = hello.record_timeline();
      std::error_code link_error;
      job.exe_path = std::filesystem::read_symlink(exe, link_error).string();
      job.env = std::move(launch->env);
      job.cwd = std::move(launch->cwd);
      job.driver = &conn;
      peer->role = rpc::ROLE_DRIVER;
      peer->job = job.id;
      peer->worker = WorkerId::FromBinary(hello.worker_id());
      welcome->set_job_id(job.id.Binary());
      PRISM_LOG_INFO("job {} started by pid {}", JobIdToInt(job.id), pid);
      jobs_[job.id] = std::move(job);
      return Status::OK();
    }
    case rpc::ROLE_WORKER: {
      WorkerId id = WorkerId::FromBinary(hello.worker_id());
      auto it = workers_.find(id);
      if (!WorkerId::IsValidBinary(hello.worker_id()) || it == workers_.end() ||
          it->second.state != WorkerState::kStarting || it->second.conn) {
        return Status::NotFound("no worker " + id.Hex() + " is being started by this daemon");
      }
      Worker& w = it->second;
      // Under a launch prefix (nsys profile ...) the worker may be a descendant of what was forked.
      if (conn.peer_pid() != w.pid && !IsDescendantOf(conn.peer_pid(), w.pid)) {
        return Status::PermissionDenied("worker " + id.Hex() + " registered from the wrong process");
      }
      w.process = conn.peer_pid();
      auto job_it = jobs_.find(w.job);
      if (job_it == jobs_.end()) return Status::NotFound("the job of this worker has ended");
      Job& job = job_it->second;
      // (A Python worker is an interpreter the driver named: there is no build of ours to match.)
      const std::string& expected_build = w.runtime == "cpp" ? self_build_id_ : job.build_id;
      if (w.runtime != "python" && hello.build_id() != expected_build) {
        job.start_failures = config_.max_worker_start_failures;  // no point in trying again
        job.start_failure_final = true;
        job.last_start_failure = "the worker's executable (build id " + hello.build_id() +
                                 ") differs from its driver's (" + job.build_id +
                                 "): was it rebuilt while the job ran?";
        return Status::InvalidArgument(job.last_start_failure);
      }
      w.state = WorkerState::kIdle;
      w.conn = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
      if (w.register_timer) w.register_timer->cancel();
      job.start_failures = 0;
      peer->role = rpc::ROLE_WORKER;
      peer->job = w.job;
      peer->worker = id;
      return Status::OK();
    }
    case rpc::ROLE_CLIENT:
      peer->role = rpc::ROLE_CLIENT;
      return Status::OK();
    default:
      return Status::InvalidArgument("unknown role " + std::to_string(hello.role()));
  }
}

void NodeDaemon::HandleRequestLease(rpc::Connection& conn, const Peer& peer,
                                    const rpc::RequestLease& req) {
  auto reject = [&](rpc::ErrorKind kind, const std::string& why) {
    RejectLease(conn, req.request_id(), kind, why);
  };
  auto shape = ShapeFromProto(req.resources());
  if (!shape.ok()) {
    reject(rpc::ERROR_SYSTEM, "invalid resource request: " + shape.status().message());
    return;
  }
  if (jobs_.count(peer.job) == 0) {
    reject(rpc::ERROR_SYSTEM, "job " + std::to_string(JobIdToInt(peer.job)) + " has ended");
    return;
  }
  if (Status st = CheckRequestShape(*shape); !st.ok()) {
    reject(rpc::ERROR_SYSTEM, "invalid resource request: " + st.message());
    return;
  }
  if (req.placement().bundle_index() < -1) {
    reject(rpc::ERROR_SYSTEM, "a bundle index is -1 (any bundle) or the bundle's position");
    return;
  }
  LeaseRequest lr{std::static_pointer_cast<rpc::Connection>(conn.shared_from_this()), req.request_id(),
                  peer.job, std::move(*shape)};
  lr.placement = req.placement();
  if (!req.runtime().empty() && req.runtime() != "cpp" && req.runtime() != "python") {
    reject(rpc::ERROR_SYSTEM, "unknown worker runtime '" + req.runtime() + "' (known: \"\", \"cpp\" and \"python\")");
    return;
  }
  if (req.runtime() == "python" && jobs_.at(peer.job).python_executable.empty()) {
    reject(rpc::ERROR_SYSTEM, "this job names no Python interpreter for Python workers (InitOptions::python_executable)");
    return;
  }
  if (req.runtime() == "cpp" && self_exe_fd_ < 0) {
    reject(rpc::ERROR_SYSTEM, "this daemon cannot start generic C++ workers (its executable is not readable)");
    return;
  }
  lr.runtime = req.runtime();
  Status env_ok = EnvFromProto(req.env(), &lr.env, &lr.env_key);
  if (!env_ok.ok()) {
    reject(rpc::ERROR_SYSTEM, env_ok.message());
    return;
  }
  if (!req.runtime().empty()) lr.env_key += std::string(1, '\1') + "runtime=" + req.runtime();
  pending_.push_back(std::move(lr));
  Schedule();
}

void NodeDaemon::HandleReturnLease(rpc::Connection& conn, const rpc::ReturnLease& ret) {
  auto it = leases_.find(ret.lease_id());
  if (it == leases_.end() && dropped_leases_.erase(ret.lease_id()) > 0) {
    return;  // it ended here first (its worker died or was stopped): nothing to give back
  }
  if (it == leases_.end() || it->second.holder != &conn) {
    SendError(conn, 0,
              Status::NotFound("lease " + std::to_string(ret.lease_id()) +
                               " is not held by this connection (returned twice, or never granted)"));
    return;
  }
  Lease lease = it->second;
  leases_.erase(it);
  ReleaseLease(lease);
  auto w = workers_.find(lease.worker);
  if (w != workers_.end()) {
    if (ret.worker_failed()) {
      KillWorker(lease.worker, "its lease holder lost it");
    } else {
      w->second.state = WorkerState::kIdle;
      w->second.lease_id = 0;
    }
  }
  Schedule();
}

// The key of a named actor: names are unique within their namespace.
std::string NodeDaemon::NamespacedName(const std::string& ns, const std::string& name) {
  return ns + '\0' + name;
}

bool NodeDaemon::IsBlocked(const Worker& w) const {
  if (w.lease_id == 0) return false;
  auto it = leases_.find(w.lease_id);
  // Only a wait that lent CPUs back frees a place under the cap: tasks that hold no CPU are not
  // bounded by the node's CPUs, so they stay bounded by the cap.
  return it != leases_.end() && it->second.blocked && !it->second.lent.empty();
}

ResourcePool* NodeDaemon::PoolOf(const Lease& lease) {
  if (lease.group == 0) return &node_pool_;
  PlacementGroupRecord* g = groups_.Find(lease.group);
  if (g == nullptr || g->state != rpc::PG_CREATED) return nullptr;
  return &g->pools.at(static_cast<size_t>(lease.bundle));
}

void NodeDaemon::ReleaseLease(const Lease& lease) {
  ResourcePool* pool = PoolOf(lease);
  if (pool == nullptr) return;  // its group was removed: the group gave everything back
  pool->Free(lease.alloc);
  pool->Reclaim(lease.lent);  // already back
}

void NodeDaemon::Schedule() {
  if (stopped_) return;
  ReservePlacementGroups();
  // Requests that fit but have no idle worker yet, by job and environment.
  struct Want {
    int count = 0;
    std::map<std::string, std::string> env;
    std::string runtime;
    std::vector<int> gpus;
  };
  std::map<std::pair<JobId, std::string>, Want> wanting;
  for (auto it = pending_.begin(); it != pending_.end();) {
    LeaseRequest& req = *it;
    if (req.actor.IsNil() ? req.from->closed() : actors_.count(req.actor) == 0 ||
                                                     actors_.at(req.actor).state == rpc::ACTOR_DEAD) {
      it = pending_.erase(it);
      continue;
    }
    auto reject = [&](rpc::ErrorKind kind, const std::string& why) {
      if (!req.actor.IsNil()) {
        ActorDead(actors_.at(req.actor), why);
      } else {
        RejectLease(*req.from, req.request_id, kind, why);
      }
    };
    PlacementGroupRecord* group = nullptr;
    if (req.placement.placement_group() != 0) {
      group = groups_.Find(req.placement.placement_group());
      if (group == nullptr) {
        reject(rpc::ERROR_INFEASIBLE, "placement group " + std::to_string(req.placement.placement_group()) +
                                          " does not exist (it was removed, or never created)");
        it = pending_.erase(it);
        continue;
      }
    }
    if (group == nullptr && !node_pool_.CanEverFit(req.shape)) {
      if (config_.fixed_size) {
        reject(rpc::ERROR_INFEASIBLE,
               "no node can ever run this task: it needs {" + req.shape.ToString() +
                   "} and the cluster has {" + config_.resources.ToString() + "}");
        it = pending_.erase(it);
        continue;
      }
      // A standalone cluster may grow: it waits, and its caller hears why (once).
      if (!req.told_queued && req.from && !req.from->closed()) {
        rpc::Envelope env;
        env.mutable_lease_queued()->set_request_id(req.request_id);
        env.mutable_lease_queued()->set_infeasible(true);
        req.from->Send(env);
        req.told_queued = true;
      }
      ++it;
      continue;
    }
    auto job_it = jobs_.find(req.job);
    if (job_it == jobs_.end() || (job_it->second.ended && req.actor.IsNil())) {
      reject(rpc::ERROR_SYSTEM, "job " + std::to_string(JobIdToInt(req.job)) + " has ended");
      it = pending_.erase(it);
      continue;
    }
    Job& job = job_it->second;
    if (job.start_failures >= config_.max_worker_start_failures) {
      reject(rpc::ERROR_SYSTEM, "workers for this job fail to start: " + job.last_start_failure);
      it = pending_.erase(it);
      continue;
    }
    std::optional<Allocation> alloc;
    int bundle = -1;
    if (group != nullptr) {
      if (group->state != rpc::PG_CREATED) {
        TellQueued(req);  // the group waits for its resources
        ++it;
        continue;
      }
      std::string error;
      alloc = PlacementGroups::Allocate(req.shape, req.placement, *group, &bundle, &error);
      if (!error.empty()) {
        reject(rpc::ERROR_INFEASIBLE, error);
        it = pending_.erase(it);
        continue;
      }
    } else {
      alloc = node_pool_.Allocate(req.shape, req.placement.strategy() == rpc::STRATEGY_SPREAD
                                                 ? DevicePolicy::kSpread
                                                 : DevicePolicy::kPack);
    }
    if (!alloc) {
      TellQueued(req);
      ++it;
      continue;
    }
    ResourcePool& pool = group != nullptr ? group->pools[static_cast<size_t>(bundle)] : node_pool_;
    // A worker is bound to its GPUs when it starts (CUDA_VISIBLE_DEVICES): a lease on GPUs needs
    // one started for exactly those.
    std::vector<int> gpus = alloc->Indices(kGpu);
    std::string worker_key = req.env_key;
    if (!gpus.empty()) {
      worker_key += std::string(1, '\1') + "gpus=";
      for (int g : gpus) worker_key += std::to_string(g) + ",";
    }
    Worker* idle = nullptr;
    for (auto& [wid, w] : workers_) {
      if (w.job == req.job && w.state == WorkerState::kIdle && w.env_key == worker_key) {
        idle = &w;
        break;
      }
    }
    if (idle == nullptr) {
      pool.Free(*alloc);  // it fits: a worker is started for it below
      if (group != nullptr && req.placement.strategy() == rpc::STRATEGY_SPREAD) group->next_bundle = bundle;
      Want& want = wanting[{req.job, worker_key}];
      want.count++;
      want.env = req.env;
      want.runtime = req.runtime;
      want.gpus = gpus;
      ++it;
      continue;
    }
    uint64_t lease_id = next_lease_id_++;
    leases_[lease_id] = Lease{lease_id, idle->id, req.from.get(), ResourceSet(), *alloc,
                              group != nullptr ? group->id : 0, bundle};
    auto add_devices = [&](auto* msg) {
      for (const DeviceShare& d : alloc->devices) {
        auto* out = msg->add_devices();
        out->set_resource(d.resource);
        out->set_index(d.index);
        out->set_milli(d.milli);
      }
    };
    idle->state = WorkerState::kLeased;
    idle->lease_id = lease_id;
    leases_granted_total_++;
    if (!req.actor.IsNil()) {
      // The worker becomes the actor's process: it runs the creation task and answers on its
      // daemon connection.
      Actor& a = actors_.at(req.actor);
      idle->actor = a.id;
      a.worker = idle->id;
      a.socket_path = idle->socket_path;
      rpc::Envelope push;
      push.mutable_push_task()->set_lease_id(lease_id);
      *push.mutable_push_task()->mutable_spec() = a.spec;
      push.mutable_push_task()->mutable_spec()->set_attempt(a.num_restarts);  // > 0: a restart
      add_devices(push.mutable_push_task());
      idle->conn->Send(push);
      it = pending_.erase(it);
      continue;
    }
    rpc::Envelope env;
    auto* g = env.mutable_lease_grant();
    g->set_request_id(req.request_id);
    g->set_lease_id(lease_id);
    g->mutable_worker()->set_socket_path(idle->socket_path);
    g->mutable_worker()->set_worker_id(idle->id.Binary());
    g->mutable_worker()->set_node_id(node_id_.Binary());
    add_devices(g);
    req.from->Send(env);
    it = pending_.erase(it);
  }
  for (auto& [pool, wanted] : wanting) {
    const JobId job_id = pool.first;
    const std::string& env_key = pool.second;
    const int want = wanted.count;
    int starting = 0;
    for (auto& [wid, w] : workers_) {
      starting += (w.job == job_id && w.env_key == env_key && w.state == WorkerState::kStarting) ? 1 : 0;
    }
    auto jit = jobs_.find(job_id);
    if (jit == jobs_.end()) continue;
    while (starting < want) {
      // Actors' processes do not count against the cap: they are not a pool to share. Nor do
      // workers blocked in Get/Wait: the tasks they wait for need workers of their own, or a
      // tree of tasks that wait on their children deadlocks once it is deeper than the cap.
      int pooled = 0;
      for (auto& [wid, w] : workers_) pooled += w.actor.IsNil() && !IsBlocked(w) ? 1 : 0;
      if (pooled >= config_.max_workers) {
        // At the cap: make room by stopping an idle worker of another job (or environment), if
        // there is one.
        const Worker* victim = nullptr;
        for (auto& [wid, w] : workers_) {
          if ((w.job != job_id || w.env_key != env_key) && w.state == WorkerState::kIdle) {
            victim = &w;
            break;
          }
        }
        if (victim == nullptr) break;
        WorkerId vid = victim->id;
        // Removing it reschedules (RemoveWorker calls Schedule), which starts the worker
        // this job waits for; this pass is stale from here on.
        KillWorker(vid, "making room for another job's workers");
        return;
      }
      StartWorker(jit->second, wanted.env, env_key, wanted.runtime, wanted.gpus);
      ++starting;
    }
    if (starting < want) {
      // No worker can start now: these requests wait like ones short of resources.
      for (auto& req : pending_) {
        if (req.job == job_id) TellQueued(req);
      }
    }
  }
}

std::map<std::string, std::string> NodeDaemon::GpuWorkerEnv(const std::vector<int>& gpus) const {
  std::map<std::string, std::string> env;
  std::string visible;
  for (int g : gpus) {
    if (!visible.empty()) visible += ",";
    // Instance i is the i-th device the daemon itself sees.
    visible += g < static_cast<int>(visible_devices_.size()) ? visible_devices_[g] : std::to_string(g);
  }
  env["CUDA_VISIBLE_DEVICES"] = visible;
  if (!config_.gpu_topology_spec.empty()) env["PRISM_GPU_TOPOLOGY"] = config_.gpu_topology_spec;
  // Which backend runs them, and how sim devices are made: the node's choice (e.g. sim devices
  // for a profile), not only the job's.
  for (const char* name : {"PRISM_GPU_BACKEND", "PRISM_GPU_COUNT_CALLS", "PRISM_SIM_DEVICE_MEMORY", "PRISM_SIM_JITTER_US"}) {
    if (const char* v = std::getenv(name); v != nullptr) env[name] = v;
  }
  return env;
}

void NodeDaemon::StartWorker(Job& job, const std::map<std::string, std::string>& request_env,
                             const std::string& env_key, const std::string& runtime, const std::vector<int>& gpus) {
  WorkerId id = RandomUniqueId();
  Worker w;
  w.id = id;
  w.job = job.id;
  w.env_key = env_key;
  w.runtime = runtime;
  std::map<std::string, std::string> env = request_env;
  if (job.timeline) env["PRISM_TIMELINE"] = "1";
  if (!gpus.empty()) {
    for (auto& [name, value] : GpuWorkerEnv(gpus)) env[name] = value;  // prism's binding wins
  }
  w.socket_path = config_.session_dir + "/w-" + id.Hex().substr(0, 16) + ".sock";
  WorkerLaunch launch;
  launch.executable_fd = job.exe_fd;
  launch.argv = job.argv;
  launch.prefix = job.launch_prefix;
  launch.executable_path = job.exe_path;
  int python_fd = -1;
  if (runtime == "python") {
    python_fd = ::open(job.python_executable.c_str(), O_RDONLY | O_CLOEXEC);
    if (python_fd < 0) {
      job.start_failures++;
      job.start_failure_final = true;
      job.last_start_failure = "cannot open the Python interpreter " + job.python_executable;
      PRISM_LOG_ERROR("{}", job.last_start_failure);
      return;
    }
    launch.executable_fd = python_fd;
    launch.argv = {job.python_executable, "-m", "prism._worker"};
    launch.executable_path = job.python_executable;
  }
  if (runtime == "cpp") {
    // The generic C++ worker: this daemon's own executable, loading the job's libraries.
    launch.executable_fd = self_exe_fd_;
    launch.argv = {"prism", "worker"};
    std::error_code link_error;
    launch.executable_path = std::filesystem::read_symlink("/proc/self/exe", link_error).string();
    for (const auto& dir : job.code_search_path) {
      launch.argv.push_back("--code-search-path");
      launch.argv.push_back(dir);
    }
  }
  launch.cwd = job.cwd;
  if (!gpus.empty() && config_.gpu_topology) {
    // Pinned to its GPUs' NUMA node, where that node's CPUs are ours to use.
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (sched_getaffinity(0, sizeof mine, &mine) == 0) {
      for (int c : config_.gpu_topology->CpusNear(gpus)) {
        if (c < CPU_SETSIZE && CPU_ISSET(c, &mine)) launch.cpus.push_back(c);
      }
    }
  }
  static const char* kOurs[] = {"PRISM_WORKER_MODE=", "PRISM_SESSION_DIR=", "PRISM_CLUSTER_TOKEN=",
                                "PRISM_WORKER_ID=", "PRISM_JOB_ID=", "PRISM_LOG_LEVEL="};
  for (const auto& e : job.env) {
    bool ours = false;
    for (const char* k : kOurs) ours = ours || e.rfind(k, 0) == 0;
    for (const auto& [name, value] : env) ours = ours || e.rfind(name + "=", 0) == 0;  // replaced
    if (!ours) launch.env.push_back(e);
  }
  for (const auto& [name, value] : env) launch.env.push_back(name + "=" + value);
  launch.env.push_back("PRISM_WORKER_MODE=1");
  launch.env.push_back("PRISM_SESSION_DIR=" + config_.session_dir);
  launch.env.push_back("PRISM_CLUSTER_TOKEN=" + config_.token);
  launch.env.push_back("PRISM_WORKER_ID=" + id.Hex());
  launch.env.push_back("PRISM_JOB_ID=" + std::to_string(JobIdToInt(job.id)));
  if (!config_.log_level.empty()) launch.env.push_back("PRISM_LOG_LEVEL=" + config_.log_level);
  auto pid = launcher_.Launch(launch);
  if (python_fd >= 0) ::close(python_fd);
  if (!pid.ok()) {
    job.start_failures++;
    job.last_start_failure = pid.status().message();
    PRISM_LOG_ERROR("cannot start a worker: {}", pid.status().ToString());
    return;
  }
  w.pid = *pid;
  workers_started_total_++;
  w.register_timer = std::make_unique<asio::steady_timer>(io_, config_.worker_register_timeout);
  w.register_timer->async_wait([this, id](const asio::error_code& ec) {
    if (ec) return;
    auto it = workers_.find(id);
    if (it == workers_.end() || it->second.state != WorkerState::kStarting) return;
    PRISM_LOG_WARN("worker {} did not register in time: killing it", id.Hex());
    ::kill(it->second.pid, SIGKILL);
  });
  worker_pids_[w.pid] = id;
  PRISM_LOG_DEBUG("started worker {} (pid {}) for job {}", id.Hex(), w.pid, JobIdToInt(job.id));
  workers_[id] = std::move(w);
}

void NodeDaemon::ReapChildren() {
  int status = 0;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) OnChildExit(pid, status);
}

void NodeDaemon::OnChildExit(pid_t pid, int wait_status) {
  auto it = worker_pids_.find(pid);
  if (it == worker_pids_.end()) return;
  WorkerId id = it->second;
  worker_pids_.erase(it);
  auto w = workers_.find(id);
  if (w == workers_.end()) return;
  std::string how = DescribeExit(wait_status);
  if (w->second.state == WorkerState::kStarting) {
    auto j = jobs_.find(w->second.job);
    if (j != jobs_.end()) {
      j->second.start_failures++;
      if (!j->second.start_failure_final) {
        j->second.last_start_failure = "a worker process " + how + " before it registered";
      }
    }
  }
  PRISM_LOG_INFO("worker {} (pid {}) {}", id.Hex(), pid, how);
  RemoveWorker(id, how);
}

void NodeDaemon::KillWorker(const WorkerId& id, const std::string& why) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  if (it->second.pid > 0) ::kill(it->second.pid, SIGKILL);
  if (it->second.process > 0 && it->second.process != it->second.pid) ::kill(it->second.process, SIGKILL);
  RemoveWorker(id, why);
}

void NodeDaemon::RemoveWorker(const WorkerId& id, const std::string& why) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  Worker w = std::move(it->second);
  workers_.erase(it);
  if (w.lease_id != 0) {
    auto l = leases_.find(w.lease_id);
    if (l != leases_.end()) {
      ReleaseLease(l->second);
      if (l->second.holder != nullptr) {
        // Its holder will give it back once it notices; that return is expected.
        dropped_leases_.insert(w.lease_id);
        dropped_order_.push_back(w.lease_id);
        while (dropped_order_.size() > 10000) {
          dropped_leases_.erase(dropped_order_.front());
          dropped_order_.pop_front();
        }
      }
      leases_.erase(l);
    }
  }
  if (w.register_timer) w.register_timer->cancel();
  if (w.state != WorkerState::kStarting || w.conn) WorkerGone(w.id);
  if (!w.actor.IsNil()) OnActorProcessDied(w.actor, why);
  if (w.conn) {
    auto c = conns_.find(w.conn);
    if (c != conns_.end()) c->second.role = rpc::ROLE_CLIENT;  // its close is no longer a worker's
    w.conn->Close(Status::Unavailable("worker removed: " + why));
  }
  ::unlink(w.socket_path.c_str());
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
  std::vector<WorkerId> orphaned;
  for (auto& [lid, lease] : leases_) {
    if (lease.holder == &conn) orphaned.push_back(lease.worker);
  }
  // (Removing one may remove others: a worker's own leases go with it. KillWorker skips those.)
  for (const WorkerId& w : orphaned) KillWorker(w, "its lease holder disconnected");
  if (peer.role == rpc::ROLE_WORKER) {
    KillWorker(peer.worker, "its connection closed: " + why.message());
  } else if (peer.role == rpc::ROLE_DRIVER) {
    WorkerGone(peer.worker);
    FinishJob(peer.job);
  }
  Schedule();
}

bool NodeDaemon::IsAlive(const WorkerId& id) const {
  auto w = workers_.find(id);
  if (w != workers_.end()) return true;
  for (const auto& [c, p] : conns_) {
    if (p.role == rpc::ROLE_DRIVER && p.worker == id) return true;
  }
  return false;
}

void NodeDaemon::WorkerGone(const WorkerId& id) {
  if (id.IsNil()) return;
  store_->OwnerGone(id);
  // Actors fate-share with their owner unless detached.
  std::vector<TaskId> orphans;
  for (auto& [aid, a] : actors_) {
    const auto& c = a.spec.actor_creation();
    if (a.state != rpc::ACTOR_DEAD && !c.detached() && c.owner().worker_id() == id.Binary()) {
      orphans.push_back(aid);
    }
  }
  for (const TaskId& aid : orphans) {
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

void NodeDaemon::HandleCreateActor(rpc::Connection& conn, const Peer& peer, const rpc::CreateActor& req) {
  const auto& spec = req.spec();
  const auto& c = spec.actor_creation();
  auto fail = [&](const Status& st) { SendError(conn, req.request_id(), st); };
  if (!TaskId::IsValidBinary(c.actor_id()) || c.actor_id() != spec.task_id()) {
    return fail(Status::InvalidArgument("an actor's id is its creation task's id (16 bytes)"));
  }
  TaskId id = TaskId::FromBinary(c.actor_id());
  if (auto known = actors_.find(id); known != actors_.end()) {
    // A retry of the task that created it: the same actor.
    if (known->second.job != peer.job) return fail(Status::AlreadyExists("actor " + id.Hex() + " exists already"));
    Subscribe(known->second, conn);
    SendActorUpdate(conn, known->second, req.request_id());
    return;
  }
  if (!c.name().empty() && actor_names_.count(NamespacedName(c.ray_namespace(), c.name())) > 0) {
    return fail(Status::AlreadyExists("an actor named '" + c.name() + "' exists already" +
                                      (c.ray_namespace().empty() ? "" : " in namespace '" + c.ray_namespace() + "'")));
  }
  if (c.max_concurrency() == 0) return fail(Status::InvalidArgument("max_concurrency must be at least 1"));
  {
    std::map<std::string, std::string> env;
    std::string key;
    Status env_ok = EnvFromProto(c.env(), &env, &key);
    if (!env_ok.ok()) return fail(env_ok);
  }
  auto shape = ShapeFromProto(req.resources());
  if (!shape.ok()) return fail(Status::InvalidArgument("invalid resources: " + shape.status().message()));
  if (Status st = CheckRequestShape(*shape); !st.ok()) return fail(st);
  if (req.placement().bundle_index() < -1) {
    return fail(Status::InvalidArgument("a bundle index is -1 (any bundle) or the bundle's position"));
  }
  if (jobs_.count(peer.job) == 0) return fail(Status::NotFound("the caller's job has ended"));
  Actor& a = actors_[id];
  a.id = id;
  a.job = peer.job;
  a.spec = spec;
  a.shape = *shape;
  a.placement = req.placement();
  Subscribe(a, conn);
  if (!c.name().empty()) actor_names_[NamespacedName(c.ray_namespace(), c.name())] = id;
  SendActorUpdate(conn, a, req.request_id());
  LeaseRequest lr;
  lr.job = peer.job;
  lr.shape = *shape;
  lr.actor = id;
  lr.placement = a.placement;
  (void)EnvFromProto(c.env(), &lr.env, &lr.env_key);  // checked above
  pending_.push_back(std::move(lr));
  Schedule();
}

void NodeDaemon::HandleActorCreated(const Peer& peer, const rpc::TaskReply& reply) {
  auto w = workers_.find(peer.worker);
  if (w == workers_.end() || w->second.actor.IsNil()) return;
  auto it = actors_.find(w->second.actor);
  if (it == actors_.end() || it->second.worker != peer.worker || it->second.state == rpc::ACTOR_DEAD) return;
  Actor& a = it->second;
  if (reply.error().kind() != rpc::ERROR_NONE) {
    const auto& e = reply.error();
    std::string why = e.kind() == rpc::ERROR_TASK
                          ? "its constructor raised " + e.type_name() + ": " + e.message()
                          : "it could not be created: " + e.message();
    a.kill_requested = true;
    ActorDead(a, why);
    KillWorker(peer.worker, "its actor failed to start");
    return;
  }
  a.state = rpc::ACTOR_ALIVE;
  PublishActor(a);
}

void NodeDaemon::HandleKillActor(const rpc::KillActor& req) {
  if (!TaskId::IsValidBinary(req.actor_id())) return;
  auto it = actors_.find(TaskId::FromBinary(req.actor_id()));
  if (it == actors_.end() || it->second.state == rpc::ACTOR_DEAD) return;
  Actor& a = it->second;
  std::string reason = req.reason().empty() ? "it was killed" : req.reason();
  if (req.no_restart()) {
    a.kill_requested = true;
    a.death_cause = reason;
  }
  if (!a.worker.IsNil() && workers_.count(a.worker) > 0) {
    KillWorker(a.worker, "its actor was killed: " + reason);  // restarts it, or not
  } else if (req.no_restart()) {
    ActorDead(a, reason);
  }
}

void NodeDaemon::OnActorProcessDied(const TaskId& id, const std::string& why) {
  auto it = actors_.find(id);
  if (it == actors_.end() || it->second.state == rpc::ACTOR_DEAD) return;
  Actor& a = it->second;
  a.worker = WorkerId();
  a.socket_path.clear();
  if (a.kill_requested) {
    ActorDead(a, a.death_cause.empty() ? "it was killed" : a.death_cause);
    return;
  }
  int max = a.spec.actor_creation().max_restarts();
  if (max >= 0 && static_cast<int>(a.num_restarts) >= max) {
    ActorDead(a, "its process died (" + why + ")" +
                     (max > 0 ? " and its " + std::to_string(max) + " restart(s) are used up" : ""));
    return;
  }
  a.num_restarts++;
  a.state = rpc::ACTOR_RESTARTING;
  PRISM_LOG_INFO("actor {} restarts ({}): {}", id.Hex(), a.num_restarts, why);
  PublishActor(a);
  LeaseRequest lr;
  lr.job = a.job;
  lr.shape = a.shape;
  lr.actor = id;
  lr.placement = a.placement;
  (void)EnvFromProto(a.spec.actor_creation().env(), &lr.env, &lr.env_key);
  pending_.push_back(std::move(lr));
  // (RemoveWorker, our caller, schedules next.)
}

void NodeDaemon::ActorDead(Actor& a, const std::string& cause) {
  if (a.state == rpc::ACTOR_DEAD) return;
  a.state = rpc::ACTOR_DEAD;
  a.death_cause = cause;
  const std::string& name = a.spec.actor_creation().name();
  auto n = actor_names_.find(NamespacedName(a.spec.actor_creation().ray_namespace(), name));
  if (!name.empty() && n != actor_names_.end() && n->second == a.id) actor_names_.erase(n);
  PRISM_LOG_INFO("actor {} is dead: {}", a.id.Hex(), cause);
  PublishActor(a);
  // Keep a short record (for status, late subscribers and retried creations), not its arguments.
  a.spec.clear_args();
  dead_actors_.push_back(a.id);
  constexpr size_t kKeptDeadActors = 10000;
  while (dead_actors_.size() > kKeptDeadActors) {
    auto old = actors_.find(dead_actors_.front());
    dead_actors_.pop_front();
    if (old != actors_.end() && old->second.state == rpc::ACTOR_DEAD && &old->second != &a) actors_.erase(old);
  }
  // Later: this may run inside Schedule(), which must not see workers and requests vanish.
  asio::post(io_, [this, job = a.job] {
    if (!stopped_) MaybeEraseJob(job);
  });
}

void NodeDaemon::MaybeEraseJob(const JobId& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !it->second.ended) return;
  for (auto& [aid, a] : actors_) {
    if (a.job == id && a.state != rpc::ACTOR_DEAD && a.spec.actor_creation().detached()) return;
  }
  it->second.ended = false;
  FinishJob(id);
}

void NodeDaemon::SendActorUpdate(rpc::Connection& conn, const Actor& a, uint64_t request_id) {
  rpc::Envelope env;
  auto* u = env.mutable_actor_update();
  u->set_request_id(request_id);
  u->set_actor_id(a.id.Binary());
  u->set_state(a.state);
  if (a.state == rpc::ACTOR_ALIVE) {
    u->mutable_address()->set_socket_path(a.socket_path);
    u->mutable_address()->set_worker_id(a.worker.Binary());
    u->mutable_address()->set_node_id(node_id_.Binary());
  }
  const auto& c = a.spec.actor_creation();
  u->set_name(c.name());
  u->set_num_restarts(a.num_restarts);
  u->set_death_cause(a.death_cause);
  *u->mutable_owner() = c.owner();
  u->set_detached(c.detached());
  u->set_max_task_retries(c.max_task_retries());
  conn.Send(env);
}

void NodeDaemon::Subscribe(Actor& a, rpc::Connection& conn) {
  for (auto& w : a.subscribers) {
    if (w.lock().get() == &conn) return;
  }
  a.subscribers.push_back(std::static_pointer_cast<rpc::Connection>(conn.shared_from_this()));
}

void NodeDaemon::PublishActor(Actor& a) {
  std::vector<std::weak_ptr<rpc::Connection>> live;
  for (auto& w : a.subscribers) {
    auto c = w.lock();
    if (!c || c->closed()) continue;
    SendActorUpdate(*c, a, 0);
    live.push_back(w);
  }
  a.subscribers = std::move(live);
}

void NodeDaemon::ReservePlacementGroups() {
  if (!pool_status_.ok()) return;
  groups_.Reserve([](PlacementGroupRecord& g) {
    for (auto& w : g.waiters) {
      w.timer->cancel();
      auto c = w.conn.lock();
      if (!c || c->closed()) continue;
      rpc::Envelope env;
      PlacementGroups::Fill(g, env.mutable_placement_group_info());
      env.mutable_placement_group_info()->set_request_id(w.request_id);
      c->Send(env);
    }
    g.waiters.clear();
  });
}

void NodeDaemon::HandleCreatePlacementGroup(rpc::Connection& conn, const Peer& peer,
                                            const rpc::CreatePlacementGroup& req) {
  if (jobs_.count(peer.job) == 0) return SendError(conn, req.request_id(), Status::NotFound("the caller's job has ended"));
  Result<uint64_t> id = groups_.Add(peer.job, req, config_.fixed_size && pool_status_.ok());
  if (!id.ok()) return SendError(conn, req.request_id(), id.status());
  Schedule();  // reserves it now if it fits
  rpc::Envelope env;
  PlacementGroups::Fill(*groups_.Find(*id), env.mutable_placement_group_info());
  env.mutable_placement_group_info()->set_request_id(req.request_id());
  conn.Send(env);
}

void NodeDaemon::HandlePlacementGroupRequest(rpc::Connection& conn, const Peer& peer,
                                             const rpc::PlacementGroupRequest& req) {
  if (peer.role == rpc::ROLE_CLIENT && req.op() != rpc::PlacementGroupRequest::GET_BY_NAME) {
    return SendError(conn, req.request_id(),
                     Status::PermissionDenied("only drivers and workers may wait for or remove placement groups"));
  }
  PlacementGroupRecord* found = nullptr;
  if (req.op() == rpc::PlacementGroupRequest::GET_BY_NAME) {
    found = groups_.FindByName(req.name());
    if (found == nullptr) {
      return SendError(conn, req.request_id(), Status::NotFound("no placement group is named '" + req.name() + "'"));
    }
  } else {
    found = groups_.Find(req.id());
    if (found == nullptr) {
      return SendError(conn, req.request_id(),
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
        // Answered when it is created, or PENDING at the deadline; waiters of closed
        // connections go now.
        std::erase_if(g.waiters, [](const PlacementGroupRecord::Waiter& w) {
          auto c = w.conn.lock();
          if (c && !c->closed()) return false;
          w.timer->cancel();
          return true;
        });
        PlacementGroupRecord::Waiter w;
        w.conn = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
        w.request_id = req.request_id();
        w.timer = std::make_shared<asio::steady_timer>(io_);
        w.timer->expires_after(std::chrono::milliseconds(req.timeout_ms() == 0 ? 30000 : req.timeout_ms()));
        w.timer->async_wait([this, gid = g.id, weak = w.conn, rid = w.request_id](const asio::error_code& ec) {
          if (ec || stopped_) return;
          PlacementGroupRecord* group = groups_.Find(gid);
          if (group == nullptr) return;
          auto& ws = group->waiters;
          auto c = weak.lock();
          std::erase_if(ws, [&](const PlacementGroupRecord::Waiter& x) {
            return x.request_id == rid && x.conn.lock() == c;
          });
          if (!c || c->closed()) return;
          rpc::Envelope env;
          PlacementGroups::Fill(*group, env.mutable_placement_group_info());
          env.mutable_placement_group_info()->set_request_id(rid);
          c->Send(env);
        });
        g.waiters.push_back(std::move(w));
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
      return SendError(conn, req.request_id(), Status::InvalidArgument("unknown placement group request"));
  }
  info->set_request_id(req.request_id());
  conn.Send(env);
}

void NodeDaemon::RemovePlacementGroup(uint64_t id, const std::string& why) {
  std::optional<PlacementGroupRecord> taken = groups_.Take(id);  // first: leases in it give nothing back to its pools now
  if (!taken) return;
  PlacementGroupRecord g = std::move(*taken);
  PRISM_LOG_INFO("placement group {} removed: {}", id, why);
  const std::string label = "placement group " + std::to_string(id) + (g.name.empty() ? "" : " ('" + g.name + "')");
  for (auto& w : g.waiters) {
    w.timer->cancel();
    auto c = w.conn.lock();
    if (c && !c->closed()) SendError(*c, w.request_id, Status::NotFound(label + " was removed before it was created"));
  }
  // Its actors die (no restart: their resources are gone), and its tasks' workers end.
  std::vector<TaskId> actors;
  for (auto& [aid, a] : actors_) {
    if (a.placement.placement_group() == id && a.state != rpc::ACTOR_DEAD) actors.push_back(aid);
  }
  for (const TaskId& aid : actors) {
    rpc::KillActor k;
    k.set_actor_id(aid.Binary());
    k.set_no_restart(true);
    k.set_reason("its " + label + " was removed");
    HandleKillActor(k);
  }
  std::vector<WorkerId> workers;
  for (auto& [lid, lease] : leases_) {
    if (lease.group == id) workers.push_back(lease.worker);
  }
  for (const WorkerId& w : workers) KillWorker(w, "its " + label + " was removed");
  // Only now, with everything that used them gone, do its resources go back to the node.
  for (const Allocation& a : g.reserved) node_pool_.Free(a);
  Schedule();
}

void NodeDaemon::FinishJob(const JobId& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  bool detached_alive = false;
  for (auto& [aid, a] : actors_) {
    detached_alive |= a.job == id && a.state != rpc::ACTOR_DEAD && a.spec.actor_creation().detached();
  }
  if (detached_alive) {
    // Its detached actors outlive the driver: keep what restarting them needs, stop the rest.
    PRISM_LOG_INFO("job {}: driver gone, detached actors stay", JobIdToInt(id));
    it->second.ended = true;
    it->second.driver = nullptr;
    control_.FinishJob(id);
    std::vector<WorkerId> ws;
    for (auto& [wid, w] : workers_) {
      bool keep = !w.actor.IsNil() && actors_.count(w.actor) > 0 &&
                  actors_.at(w.actor).spec.actor_creation().detached();
      if (w.job == id && !keep) ws.push_back(wid);
    }
    for (const WorkerId& w : ws) KillWorker(w, "its job finished");
    // Its groups go too, except those its detached actors live in.
    std::vector<uint64_t> groups;
    for (auto& [gid, g] : groups_.all()) {
      bool used = false;
      for (auto& [aid, a] : actors_) {
        used |= a.placement.placement_group() == gid && a.state != rpc::ACTOR_DEAD &&
                a.spec.actor_creation().detached();
      }
      if (g.job == id && !used && !g.detached) groups.push_back(gid);
    }
    for (uint64_t gid : groups) RemovePlacementGroup(gid, "its job finished");
    return;
  }
  PRISM_LOG_INFO("job {} finished", JobIdToInt(id));
  if (it->second.exe_fd >= 0) ::close(it->second.exe_fd);
  jobs_.erase(it);  // first, so that rescheduling below starts no worker for it
  control_.FinishJob(id);
  std::vector<uint64_t> groups;
  for (auto& [gid, g] : groups_.all()) {
    if (g.job == id && !g.detached) groups.push_back(gid);  // (detached ones live until removed)
  }
  for (uint64_t gid : groups) RemovePlacementGroup(gid, "its job finished");
  std::vector<WorkerId> ws;
  for (auto& [wid, w] : workers_) {
    if (w.job == id) ws.push_back(wid);
  }
  for (const WorkerId& w : ws) KillWorker(w, "its job finished");
}

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
  for (auto& [wid, w] : workers_) idle += w.state == WorkerState::kIdle ? 1 : 0;
  s->set_workers_alive(static_cast<uint32_t>(workers_.size()));
  s->set_workers_idle(idle);
  s->set_leases_active(static_cast<uint32_t>(leases_.size()));
  s->set_leases_granted_total(leases_granted_total_);
  s->set_workers_started_total(workers_started_total_);
  s->set_pending_lease_requests(static_cast<uint32_t>(pending_.size()));
  s->set_drivers(static_cast<uint32_t>(control_.alive_jobs()));
  s->set_pid(getpid());
  std::map<std::string, uint32_t> infeasible;
  for (const auto& req : pending_) {
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
  for (const auto& [aid, a] : actors_) {
    auto* line = s->add_actors();
    line->set_actor_id(aid.Binary());
    line->set_name(a.spec.actor_creation().name());
    line->set_state(a.state);
    line->set_num_restarts(a.num_restarts);
    auto w = workers_.find(a.worker);
    line->set_pid(w == workers_.end() ? 0 : w->second.pid);
    line->set_death_cause(a.death_cause);
    line->set_detached(a.spec.actor_creation().detached());
  }
  if (store_) {
    StoreTableStats st = store_->stats();
    auto* o = s->mutable_store();
    o->set_capacity(st.capacity);
    o->set_used(st.used);
    o->set_pinned(st.pinned);
    o->set_spilled(st.spilled);
    o->set_num_objects(st.num_objects);
    o->set_num_spilled(st.num_spilled);
    o->set_spills_total(st.spills_total);
    o->set_restores_total(st.restores_total);
    o->set_spill_dir(config_.session_dir + "/spill");
  }
  conn.Send(env);
}

void NodeDaemon::Stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  if (acceptor_) acceptor_->close(ec);
  signals_.cancel(ec);
  if (lifeline_) lifeline_->close(ec);
  if (self_exe_fd_ >= 0) ::close(self_exe_fd_);
  self_exe_fd_ = -1;
  std::vector<std::shared_ptr<rpc::Connection>> open;
  for (auto& [conn, peer] : conns_) open.push_back(conn);
  for (auto& conn : open) conn->Close(Status::Cancelled("the node daemon is stopping"));
  // Workers first get SIGTERM and a moment to go; then SIGKILL. (Workers under a launch prefix
  // are the prefix's children: they get the signals too.)
  std::vector<pid_t> prefixed;
  for (auto& [wid, w] : workers_) {
    if (w.process > 0 && w.process != w.pid) prefixed.push_back(w.process);
  }
  for (pid_t p : prefixed) ::kill(p, SIGTERM);
  for (auto& [pid, id] : worker_pids_) ::kill(pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!worker_pids_.empty() && std::chrono::steady_clock::now() < deadline) {
    int status;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      worker_pids_.erase(pid);
    } else if (pid < 0) {
      break;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  for (pid_t p : prefixed) ::kill(p, SIGKILL);
  for (auto& [pid, id] : worker_pids_) {
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
  }
  worker_pids_.clear();
  for (auto& [wid, w] : workers_) ::unlink(w.socket_path.c_str());
  workers_.clear();
  for (auto& [jid, job] : jobs_) {
    if (job.exe_fd >= 0) ::close(job.exe_fd);
  }
  jobs_.clear();
  // Spills and restores still queued are dropped (nothing runs their completions now), the one
  // running ends, and only then does the arena go.
  if (disk_) disk_->Stop(/*discard_queued=*/true);
  store_service_.reset();
  store_.reset();  // unmaps the arena and removes spill files
  ::unlink(socket_path_.c_str());
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

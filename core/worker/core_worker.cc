#include "worker/core_worker.h"

#include "base/ids.h"
#include "base/logging.h"
#include "rpc/blocking_client.h"

#include <prism/errors.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <future>

namespace prism {
namespace {

// The task running on this thread (worker main thread), with its submission counters.
thread_local bool tl_in_task = false;
thread_local TaskId tl_task;
thread_local uint64_t tl_submitted = 0;
thread_local uint32_t tl_puts = 0;

[[noreturn]] void ThrowStored(const ObjectId& id, const rpc::TaskError& e) {
  switch (e.kind()) {
    case rpc::ERROR_TASK:
      throw TaskError(e.function(), e.type_name(), e.message());
    case rpc::ERROR_WORKER_CRASHED:
      throw WorkerCrashedError(e.message());
    case rpc::ERROR_INFEASIBLE:
      throw InfeasibleError(e.message());
    case rpc::ERROR_FUNCTION_NOT_FOUND:
    case rpc::ERROR_ARGUMENT:
      throw InvalidArgumentError(e.message());
    case rpc::ERROR_OBJECT_LOST:
      throw ObjectLostError(e.message());
    case rpc::ERROR_OWNER_DIED:
      throw OwnerDiedError(e.message());
    default:
      throw RuntimeError("object " + id.Hex() + ": " + e.message());
  }
}

}  // namespace

CoreWorker::CoreWorker(CoreWorkerOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<CoreWorker>> CoreWorker::Start(CoreWorkerOptions options) {
  options.submitter.token = options.token;
  std::unique_ptr<CoreWorker> cw(new CoreWorker(std::move(options)));
  PRISM_RETURN_IF_ERROR(cw->Listen());
  PRISM_RETURN_IF_ERROR(cw->ConnectDaemon());
  cw->driver_task_ = DriverTaskId(cw->options_.job_id);
  if (cw->options_.role == rpc::ROLE_WORKER) {
    // Code in a worker outside any task (other threads, before the first task) submits under
    // a root of its own, so its ids never meet the driver's.
    uint64_t salt;
    std::memcpy(&salt, cw->options_.worker_id.data(), sizeof(salt));
    cw->driver_task_ = ChildTaskId(cw->driver_task_, salt | (uint64_t{1} << 63));
  }
  cw->submitter_ = std::make_unique<TaskSubmitter>(
      cw->loop_.context(), cw->options_.submitter, cw->store_, *cw->daemon_,
      [w = cw.get()](const ObjectId& id, const internal::OwnerAddress& owner,
                     MemoryStore::Callback done) { w->FetchBorrowed(id, owner, std::move(done)); },
      [w = cw.get()](const internal::OwnerAddress& owner) { return w->IsSelf(owner); });
  if (cw->options_.role == rpc::ROLE_WORKER) {
    cw->executor_ = std::make_unique<TaskExecutor>([](const rpc::TaskSpec& spec) {
      tl_in_task = true;
      tl_task = TaskId::FromBinary(spec.task_id());
      tl_submitted = 0;
      tl_puts = 0;
    });
  }
  cw->daemon_->Start();
  cw->Accept();
  cw->loop_.Start(cw->options_.role == rpc::ROLE_WORKER ? "prism-wio" : "prism-io");
  return cw;
}

CoreWorker::~CoreWorker() { Shutdown(); }

Status CoreWorker::Listen() {
  std::string prefix = options_.role == rpc::ROLE_WORKER ? "/w-" : "/d-";
  address_.socket_path = options_.session_dir + prefix + options_.worker_id.Hex().substr(0, 16) + ".sock";
  address_.worker_id = options_.worker_id.Binary();
  PRISM_ASSIGN_OR_RETURN(acceptor_, rpc::Listen(loop_.context(), address_.socket_path));
  return Status::OK();
}

Status CoreWorker::ConnectDaemon() {
  rpc::Envelope hello = rpc::MakeHello(options_.role, options_.token);
  hello.mutable_hello()->set_worker_id(options_.worker_id.Binary());
  hello.mutable_hello()->set_build_id(options_.build_id);
  if (options_.role == rpc::ROLE_WORKER) hello.mutable_hello()->set_job_id(options_.job_id.Binary());
  rpc::Welcome welcome;
  auto client = rpc::BlockingClient::ConnectAndHello(options_.daemon_socket, hello, &welcome);
  if (!client.ok()) return client.status();
  if (options_.role == rpc::ROLE_DRIVER) {
    if (!JobId::IsValidBinary(welcome.job_id())) {
      return Status::ProtocolError("the node daemon assigned no job id");
    }
    options_.job_id = JobId::FromBinary(welcome.job_id());
  }
  address_.node_id = welcome.node_id();
  rpc::UnixSocket sock(loop_.context());
  sock.assign(asio::local::stream_protocol(), client->Release());
  auto conn = rpc::Connection::Create(std::move(sock), options_.submitter.max_frame_bytes);
  daemon_ = std::make_unique<DaemonClient>(conn, [this](const Status& st) {
    if (shut_down_) return;
    if (options_.role == rpc::ROLE_WORKER) {
      // The daemon let us go (or died): nothing more will come.
      if (executor_) executor_->Stop();
      return;
    }
    PRISM_LOG_ERROR("lost the node daemon: {}", st.ToString());
    auto err = StoredObject::Error(rpc::ERROR_SYSTEM, "the node daemon is gone: " + st.message());
    submitter_->FailAll(err);
  });
  return Status::OK();
}

void CoreWorker::Accept() {
  acceptor_->async_accept([this](const asio::error_code& ec, rpc::UnixSocket sock) {
    if (ec) {
      if (shut_down_ || ec == asio::error::operation_aborted) return;
      // Out of descriptors, most likely: back off instead of spinning.
      PRISM_LOG_WARN("accept: {}; retrying in 100 ms", ec.message());
      auto timer = std::make_shared<asio::steady_timer>(loop_.context(), std::chrono::milliseconds(100));
      timer->async_wait([this, timer](const asio::error_code&) {
        if (!shut_down_) Accept();
      });
      return;
    }
    auto conn = rpc::Connection::Create(std::move(sock), options_.submitter.max_frame_bytes);
    peers_.insert(conn);
    // A peer that never introduces itself does not get to hold a connection.
    auto timer = std::make_shared<asio::steady_timer>(loop_.context(), std::chrono::seconds(10));
    std::weak_ptr<rpc::Connection> weak = conn;
    timer->async_wait([timer, weak](const asio::error_code& ec) {
      auto c = weak.lock();
      if (ec || !c || c->closed() || c->user_data != nullptr) return;
      c->Close(Status::Timeout("no Hello within 10 s"));
    });
    conn->Start([this](rpc::Connection& c, rpc::Envelope& m) { OnPeerMessage(c, m); },
                [this, conn](rpc::Connection&, const Status&) { peers_.erase(conn); });
    Accept();
  });
}

void CoreWorker::OnPeerMessage(rpc::Connection& conn, rpc::Envelope& msg) {
  const bool welcomed = conn.user_data != nullptr;
  if (!welcomed) {
    Status st = msg.has_hello() ? rpc::CheckHello(msg.hello(), options_.token)
                                : Status::ProtocolError("the first frame must be Hello");
    if (st.ok() && msg.hello().expect_worker_id() != options_.worker_id.Binary()) {
      st = Status::NotFound("this socket belongs to worker " + options_.worker_id.Hex() +
                            ", not the one the caller expected");
    }
    rpc::Envelope reply;
    if (!st.ok()) {
      reply.mutable_refused()->set_reason(st.ToString());
      conn.Send(reply);
      conn.Close(st);
      return;
    }
    conn.user_data = this;
    reply.mutable_welcome()->set_worker_id(options_.worker_id.Binary());
    reply.mutable_welcome()->set_node_id(address_.node_id);
    conn.Send(reply);
    return;
  }
  switch (msg.body_case()) {
    case rpc::Envelope::kPushTask:
      if (executor_) {
        auto self = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
        executor_->Enqueue(std::move(*msg.mutable_push_task()), self);
        return;
      }
      break;
    case rpc::Envelope::kGetObject:
      ServeGetObject(conn, msg.get_object());
      return;
    default:
      break;
  }
  rpc::Envelope err;
  err.mutable_error()->set_code(static_cast<uint32_t>(StatusCode::kInvalidArgument));
  err.mutable_error()->set_message("unexpected message kind " + std::to_string(msg.body_case()));
  conn.Send(err);
}

void CoreWorker::ServeGetObject(rpc::Connection& conn, const rpc::GetObjectRequest& req) {
  auto self = conn.shared_from_this();
  uint64_t rid = req.request_id();
  std::string oid = req.object_id();
  auto reply = [self, rid, oid](const StoredObject& obj) {
    rpc::Envelope env;
    auto* r = env.mutable_get_object_reply();
    r->set_request_id(rid);
    r->set_object_id(oid);
    if (obj.is_error()) {
      *r->mutable_error() = obj.error;
    } else {
      r->set_data(*obj.data);
    }
    self->Send(env);
  };
  if (!ObjectId::IsValidBinary(oid) || !store_.OnReady(ObjectId::FromBinary(oid), reply)) {
    reply(StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                              "object " + ObjectId::FromBinary(oid).Hex() +
                                  " is not held by its owner (freed, or never existed)"));
  }
}

void CoreWorker::FetchBorrowed(const ObjectId& id, const internal::OwnerAddress& owner,
                               MemoryStore::Callback done) {
  auto fail = [&](const std::string& why) {
    done(StoredObject::Error(rpc::ERROR_OWNER_DIED,
                             "the owner of object " + id.Hex() + " is unreachable: " + why));
  };
  auto it = owners_.find(owner.socket_path);
  if (it == owners_.end() || it->second->conn->closed()) {
    rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_CLIENT, options_.token);
    hello.mutable_hello()->set_expect_worker_id(owner.worker_id);
    auto client = rpc::BlockingClient::ConnectAndHello(owner.socket_path, hello, nullptr, 2000);
    if (!client.ok()) {
      fail(client.status().message());
      return;
    }
    rpc::UnixSocket sock(loop_.context());
    sock.assign(asio::local::stream_protocol(), client->Release());
    auto oc = std::make_unique<OwnerConn>();
    oc->conn = rpc::Connection::Create(std::move(sock), options_.submitter.max_frame_bytes);
    OwnerConn* raw = oc.get();
    std::string path = owner.socket_path;
    oc->conn->Start(
        [raw](rpc::Connection&, rpc::Envelope& m) {
          if (!m.has_get_object_reply()) return;
          auto w = raw->waiting.find(m.get_object_reply().request_id());
          if (w == raw->waiting.end()) return;
          auto cb = std::move(w->second.second);
          raw->waiting.erase(w);
          const auto& r = m.get_object_reply();
          if (r.error().kind() != rpc::ERROR_NONE) {
            StoredObject o;
            o.error = r.error();
            cb(o);
          } else {
            cb(StoredObject::Value(r.data()));
          }
        },
        [raw](rpc::Connection&, const Status& st) {
          auto waiting = std::move(raw->waiting);
          for (auto& [rid, w] : waiting) {
            w.second(StoredObject::Error(rpc::ERROR_OWNER_DIED,
                                         "the owner of object " + w.first.Hex() +
                                             " died or disconnected: " + st.message()));
          }
        });
    it = owners_.insert_or_assign(path, std::move(oc)).first;
  }
  uint64_t rid = next_get_id_++;
  it->second->waiting[rid] = {id, std::move(done)};
  rpc::Envelope env;
  env.mutable_get_object()->set_request_id(rid);
  env.mutable_get_object()->set_object_id(id.Binary());
  it->second->conn->Send(env);
}

void CoreWorker::EnsureFetched(const internal::RefHandle& ref) {
  if (IsSelf(ref.owner())) return;
  {
    std::lock_guard<std::mutex> lock(fetch_mu_);
    if (!fetching_.insert(ref.id()).second) return;
  }
  ObjectId id = ref.id();
  internal::OwnerAddress owner = ref.owner();
  asio::post(loop_.context(), [this, id, owner] {
    FetchBorrowed(id, owner, [this, id](const StoredObject& obj) {
      store_.Put(id, obj);
      std::lock_guard<std::mutex> lock(fetch_mu_);
      fetching_.erase(id);
    });
  });
}

bool CoreWorker::IsSelf(const internal::OwnerAddress& owner) const {
  return owner.worker_id == address_.worker_id;
}

internal::RefPtr CoreWorker::NewHandle(const ObjectId& id) {
  store_.AddRef(id);
  return std::make_shared<internal::RefHandle>(id, address_, options_.runtime_generation);
}

TaskId CoreWorker::CurrentTaskId() const { return tl_in_task ? tl_task : driver_task_; }

internal::RefPtr CoreWorker::SubmitTask(const std::string& function,
                                        std::vector<internal::SerializedArg> args,
                                        const TaskOptions& options) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  if (!std::isfinite(options.num_cpus) || options.num_cpus < 0) {
    throw InvalidArgumentError("num_cpus must be a finite number >= 0, not " +
                               std::to_string(options.num_cpus));
  }
  if (options.max_retries < -1) {
    throw InvalidArgumentError("max_retries must be >= -1 (-1 retries forever)");
  }
  std::map<std::string, double> units = options.resources;
  if (units.count(kCpu) > 0) {
    throw InvalidArgumentError("set CPUs with num_cpus, not resources[\"CPU\"]");
  }
  units[kCpu] = options.num_cpus;
  auto shape = ResourceSet::FromUnits(units);
  if (!shape.ok()) throw InvalidArgumentError(shape.status().message());

  TaskId task_id = tl_in_task ? ChildTaskId(tl_task, ++tl_submitted)
                              : ChildTaskId(driver_task_, ++driver_submitted_);
  PendingTask t;
  t.spec.set_task_id(task_id.Binary());
  t.spec.set_job_id(options_.job_id.Binary());
  t.spec.set_parent_task_id(CurrentTaskId().Binary());
  t.spec.set_attempt(0);
  t.spec.set_function(function);
  t.spec.set_name(options.name.empty() ? function : options.name);
  t.spec.set_num_returns(1);
  t.spec.mutable_caller()->set_socket_path(address_.socket_path);
  t.spec.mutable_caller()->set_worker_id(address_.worker_id);
  t.spec.mutable_caller()->set_node_id(address_.node_id);
  for (const auto& [name, milli] : shape->milli()) {
    auto* r = t.spec.add_resources();
    r->set_name(name);
    r->set_milli(milli);
  }
  t.arg_refs.reserve(args.size());
  for (auto& a : args) {
    auto* arg = t.spec.add_args();
    if (a.ref) {
      CheckCurrent(*a.ref);
      auto* ref = arg->mutable_ref();
      ref->set_object_id(a.ref->id().Binary());
      ref->mutable_owner()->set_socket_path(a.ref->owner().socket_path);
      ref->mutable_owner()->set_worker_id(a.ref->owner().worker_id);
      ref->mutable_owner()->set_node_id(a.ref->owner().node_id);
    } else {
      arg->set_value(std::move(a.value));
    }
    t.arg_refs.push_back(std::move(a.ref));
  }
  t.resources = std::move(*shape);
  t.retries_left = options.max_retries;
  t.return_id = ReturnObjectId(task_id, 1);
  internal::RefPtr handle = NewHandle(t.return_id);
  submitter_->Submit(std::move(t));
  return handle;
}

internal::RefPtr CoreWorker::Put(std::string data) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  uint32_t n = tl_in_task ? ++tl_puts : ++driver_puts_;
  ObjectId id = PutObjectId(CurrentTaskId(), n);
  internal::RefPtr handle = NewHandle(id);
  store_.Put(id, StoredObject::Value(std::move(data)));
  return handle;
}

internal::RefPtr CoreWorker::MakeRef(const ObjectId& id, internal::OwnerAddress owner) {
  bool self = IsSelf(owner);
  bool known = store_.Contains(id);
  store_.AddRef(id);
  auto handle = std::make_shared<internal::RefHandle>(id, std::move(owner), options_.runtime_generation);
  if (self && !known) {
    store_.Put(id, StoredObject::Error(rpc::ERROR_OBJECT_LOST,
                                       "object " + id.Hex() + " was already freed by this process"));
  }
  return handle;
}

void CoreWorker::CheckCurrent(const internal::RefHandle& ref) const {
  if (ref.generation() != options_.runtime_generation) {
    throw InvalidArgumentError("object " + ref.id().Hex() +
                               " belongs to an earlier prism session (before Shutdown())");
  }
}

std::vector<std::shared_ptr<const std::string>> CoreWorker::Get(
    const std::vector<const internal::RefHandle*>& refs, int64_t timeout_ms) {
  std::vector<ObjectId> ids;
  ids.reserve(refs.size());
  for (const auto* r : refs) {
    CheckCurrent(*r);
    EnsureFetched(*r);
    ids.push_back(r->id());
  }
  std::optional<MemoryStore::Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = MemoryStore::Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::vector<bool> ready = store_.Wait(ids, ids.size(), deadline);
  size_t not_ready = 0;
  for (bool r : ready) not_ready += r ? 0 : 1;
  if (not_ready > 0) {
    throw GetTimeoutError("Get timed out after " + std::to_string(timeout_ms) + " ms: " +
                          std::to_string(not_ready) + " of " + std::to_string(ids.size()) +
                          " objects not ready");
  }
  std::vector<std::shared_ptr<const std::string>> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    auto obj = store_.GetIfReady(id);
    if (!obj) throw ObjectLostError("object " + id.Hex() + " vanished while being read");
    if (obj->is_error()) ThrowStored(id, obj->error);
    out.push_back(obj->data);
  }
  return out;
}

std::vector<bool> CoreWorker::Wait(const std::vector<const internal::RefHandle*>& refs,
                                   size_t num_returns, int64_t timeout_ms) {
  std::vector<ObjectId> ids;
  ids.reserve(refs.size());
  for (const auto* r : refs) {
    CheckCurrent(*r);
    EnsureFetched(*r);
    ids.push_back(r->id());
  }
  std::optional<MemoryStore::Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = MemoryStore::Clock::now() + std::chrono::milliseconds(timeout_ms);
  return store_.Wait(ids, num_returns, deadline);
}

void CoreWorker::RunTaskLoop() {
  if (executor_) executor_->Run();
}

void CoreWorker::Shutdown() {
  if (shut_down_.exchange(true)) return;
  if (executor_) executor_->Stop();
  if (!loop_.started()) {  // Start() failed before the loop ran: nothing is connected
    ::unlink(address_.socket_path.c_str());
    return;
  }
  std::promise<void> done;
  asio::post(loop_.context(), [this, &done] {
    asio::error_code ec;
    if (acceptor_) acceptor_->close(ec);
    if (submitter_) submitter_->FailAll(StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down"));
    for (auto& p : std::vector<std::shared_ptr<rpc::Connection>>(peers_.begin(), peers_.end())) {
      p->Close(Status::Cancelled("shutting down"));
    }
    for (auto& [path, oc] : owners_) oc->conn->Close(Status::Cancelled("shutting down"));
    if (daemon_) daemon_->Close();
    done.set_value();
  });
  done.get_future().wait_for(std::chrono::seconds(5));
  loop_.Stop();
  store_.FailAllPending(StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down"));
  ::unlink(address_.socket_path.c_str());
}

}  // namespace prism

#include "worker/core_worker.h"

#include <prism/errors.h>
#include <prism/remote.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <thread>

#include "base/ids.h"
#include "base/logging.h"
#include "base/mutex.h"
#include "rpc/address.h"
#include "rpc/blocking_client.h"

namespace prism {
namespace {

CallCanceller& GlobalCallCanceller() {
  static CallCanceller canceller;
  return canceller;
}

}  // namespace

void SetCallCanceller(CallCanceller canceller) { GlobalCallCanceller() = std::move(canceller); }

CoreWorker::CoreWorker(CoreWorkerOptions options)
    : options_(std::move(options)), store_([this](FreedObject f) { OnFreed(std::move(f)); }) {
  OwnerClients::Config config;
  config.token = options_.token;
  config.max_frame_bytes = options_.submitter.max_frame_bytes;
  config.self = options_.worker_id;
  owner_clients_ =
      std::make_unique<OwnerClients>(loop_.context(), std::move(config),
                                     [this](const ObjectId& id) { store_.UndoRegistration(id); });
  owner_service_ = std::make_unique<OwnerService>(store_, *gpu_tasks_);
}

Result<std::unique_ptr<CoreWorker>> CoreWorker::Start(CoreWorkerOptions options) {
  options.submitter.token = options.token;
  std::unique_ptr<CoreWorker> cw(new CoreWorker(std::move(options)));
  if (const char* t = std::getenv("PRISM_TIMELINE");
      cw->options_.role == rpc::ROLE_WORKER && t != nullptr && std::string(t) == "1") {
    cw->timeline_ = std::make_unique<TimelineRecorder>(cw->options_.session_dir);
  }
  PRISM_RETURN_IF_ERROR(cw->Listen());
  PRISM_RETURN_IF_ERROR(cw->ConnectDaemon());
  {
    CoreWorker* self = cw.get();
    GpuTasks::Peers peers;
    peers.self = cw->address_;
    peers.register_import = [self](
                                const internal::OwnerAddress& p, const std::string& id,
                                const std::string& transfer_group) -> std::optional<std::string> {
      if (self->shut_down_) return std::nullopt;
      return self->owner_clients_->ImportDeviceObject(p, id, transfer_group);
    };
    peers.release_import = [self](const internal::OwnerAddress& p, const std::string& id) {
      if (!self->shut_down_) self->owner_clients_->ReleaseDeviceImport(p, id);
    };
    cw->gpu_tasks_->SetPeers(std::move(peers));
  }
  {
    auto store = StoreClient::Connect(cw->options_.daemon_socket, cw->options_.token,
                                      cw->options_.worker_id);
    if (!store.ok())
      return Status(store.status().code(), "object store: " + store.status().message());
    cw->object_store_ = std::shared_ptr<StoreClient>(std::move(*store));
    cw->gpu_tasks_->SetHostStore(cw->object_store_, cw->options_.worker_id);
  }
  TaskId root = DriverTaskId(cw->options_.job_id);
  if (cw->options_.role == rpc::ROLE_WORKER) {
    // Code in a worker outside any task (other threads, before the first task) submits under
    // a root of its own, so its ids never meet the driver's.
    uint64_t salt;
    std::memcpy(&salt, cw->options_.worker_id.data(), sizeof(salt));
    root = ChildTaskId(root, salt | (uint64_t{1} << 63));
  }
  cw->task_context_ = std::make_unique<TaskContext>(root);
  CoreWorker* self = cw.get();
  cw->objects_ = std::make_unique<ObjectAccess>(
      ObjectAccess::Self{cw->address_, cw->options_.runtime_generation}, cw->store_,
      cw->object_store_, *cw->owner_clients_, *cw->task_context_, cw->loop_.context(),
      [self] { return self->InTaskOfWorker(); },
      [self](bool blocked) { self->SetBlocked(blocked); });
  cw->results_ = std::make_unique<ResultWriter>(*cw->objects_, *cw->object_store_, cw->store_,
                                                *cw->owner_clients_);
  cw->runner_ = std::make_unique<TaskRunner>(
      TaskRunner::Parts{cw->address_, *cw->objects_, *cw->results_, *cw->owner_clients_,
                        *cw->gpu_tasks_, cw->object_store_, cw->timeline_.get()});
  CoreWorker* w = cw.get();
  cw->actor_submitter_ =
      std::make_unique<ActorSubmitter>(cw->loop_.context(), cw->options_.submitter, cw->store_,
                                       *cw->daemon_, static_cast<SubmitterHost&>(*w));
  cw->submitter_ =
      std::make_unique<TaskSubmitter>(cw->loop_.context(), cw->options_.submitter, cw->store_,
                                      *cw->daemon_, static_cast<SubmitterHost&>(*w));
  // A thread waiting for objects reads the reply to its last task or actor call itself.
  cw->store_.SetSpinPoll([w](bool last) {
    w->submitter_->ReadOwnReply(last);
    w->actor_submitter_->ReadOwnReply(last);
  });
  cw->daemon_->on_actor_update = [w](const rpc::ActorUpdate& u) {
    w->actor_submitter_->OnUpdate(u);
  };
  cw->actor_submitter_->on_dead = [w](const ActorId& id) {
    std::vector<internal::RefPtr> drop;  // released outside the lock
    MutexLock lock(w->actor_mu_);
    auto it = w->actor_arg_refs_.find(id);
    if (it != w->actor_arg_refs_.end()) {
      drop = std::move(it->second);
      w->actor_arg_refs_.erase(it);
    }
  };
  if (cw->options_.role == rpc::ROLE_WORKER) {
    cw->executor_ =
        std::make_unique<TaskExecutor>([w](std::shared_ptr<const rpc::PushTask> push,
                                           const std::shared_ptr<rpc::Connection>& from) {
          return w->runner_->Execute(std::move(push), from);
        });
    cw->runner_->SetExecutor(cw->executor_.get());
    // Between one caller's calls the executor reads that caller's connection itself: a task
    // pushed there is queued from its thread, anything else goes to the loop (in order).
    cw->executor_->SetReadNext([](rpc::Connection& conn) {
      static const rpc::Connection::TakeHere take = [](rpc::Connection& c, rpc::Envelope& m) {
        if (!m.has_push_task()) return false;
        static_cast<CoreWorker*>(c.user_data)->TakePush(c, m);  // (set when it was welcomed)
        return true;
      };
      return conn.TryReadHere(take);
    });
    // The daemon makes this worker an actor's process by pushing the creation task on its
    // connection; the reply goes back there.
    cw->daemon_->on_push = [w](rpc::PushTask push, std::shared_ptr<rpc::Connection> from) {
      w->executor_->Enqueue(std::move(push), std::move(from));
    };
  }
  cw->daemon_->Start(std::move(cw->daemon_leftover_));
  if (cw->options_.role == rpc::ROLE_WORKER) {
    cw->output_ = std::make_unique<OutputCapture>([w](rpc::WorkerOutput out) {
      rpc::Envelope env;
      *env.mutable_worker_output() = std::move(out);
      w->daemon_->Send(env);
    });
    if (cw->output_->Start()) {
      cw->output_->SetLabel("(worker pid=" + std::to_string(getpid()) + ")");
      // Each task relabels it; the pid is put in once (no system call per task).
      cw->runner_->SetOutput(cw->output_.get(), " pid=" + std::to_string(getpid()) + ")");
    } else {
      cw->output_.reset();
    }
  } else {
    // The driver prints what its workers print, each line with the task or actor it came from.
    const char* env = std::getenv("PRISM_LOG_TO_DRIVER");
    if (env == nullptr || std::string(env) != "0") {
      cw->daemon_->on_worker_output = [](const rpc::WorkerOutput& out) {
        for (const auto& l : out.lines()) {
          std::fprintf(l.err() ? stderr : stdout, "%s %s\n", l.label().c_str(), l.text().c_str());
        }
        std::fflush(stdout);
        std::fflush(stderr);
      };
    }
  }
  cw->Accept();
  cw->loop_.Start(cw->options_.role == rpc::ROLE_WORKER ? "prism-wio" : "prism-io");
  return cw;
}

CoreWorker::~CoreWorker() { Shutdown(); }

Status CoreWorker::Listen() {
  std::string prefix = options_.role == rpc::ROLE_WORKER ? "/w-" : "/d-";
  address_.socket_path =
      options_.session_dir + prefix + options_.worker_id.Hex().substr(0, 16) + ".sock";
  address_.worker_id = options_.worker_id.Binary();
  PRISM_ASSIGN_OR_RETURN(acceptor_, rpc::Listen(loop_.context(), address_.socket_path));
  return Status::OK();
}

Status CoreWorker::ConnectDaemon() {
  rpc::Envelope hello = rpc::MakeHello(options_.role, options_.token);
  hello.mutable_hello()->set_worker_id(options_.worker_id.Binary());
  hello.mutable_hello()->set_build_id(options_.build_id);
  if (options_.role == rpc::ROLE_WORKER)
    hello.mutable_hello()->set_job_id(options_.job_id.Binary());
  for (const auto& a : options_.worker_argv) hello.mutable_hello()->add_worker_argv(a);
  for (const auto& a : options_.worker_launch_prefix)
    hello.mutable_hello()->add_worker_launch_prefix(a);
  hello.mutable_hello()->set_record_timeline(options_.timeline);
  for (const auto& d : options_.code_search_path) hello.mutable_hello()->add_code_search_path(d);
  hello.mutable_hello()->set_python_executable(options_.python_executable);
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
  address_.node_address = welcome.node_address();
  // Processes of other nodes are reached through this node's relay (a node with a cluster port).
  rpc::SetLocalNode(address_.node_id, address_.node_address.empty()
                                          ? std::string()
                                          : options_.session_dir + "/relay.sock");
  daemon_leftover_ = client->TakeBuffered();  // the daemon may send right after its Welcome
  rpc::UnixSocket sock(loop_.context());
  sock.assign(asio::local::stream_protocol(), client->Release());
  auto conn = rpc::Connection::Create(std::move(sock), options_.submitter.max_frame_bytes);
  daemon_ = std::make_unique<DaemonClient>(
      conn,
      [this](const Status& st) {
        if (shut_down_) return;
        if (options_.role == rpc::ROLE_WORKER) {
          // The daemon let us go (or died): nothing more will come.
          if (executor_) executor_->Stop();
          return;
        }
        PRISM_LOG_ERROR("lost the node daemon: {}", st.ToString());
        auto err =
            StoredObject::Error(rpc::ERROR_SYSTEM, "the node daemon is gone: " + st.message());
        submitter_->FailAll(err);
        actor_submitter_->FailAll(err);
      },
      [this](const WorkerId& id) { OnWorkerDied(id); });
  // Requests the daemon spills to another node go to that node's daemon, through the relay.
  daemon_->set_remote_dialer(
      [this](const rpc::Address& daemon, std::function<void(Result<rpc::Connected>)> done) {
        rpc::Envelope hello = rpc::MakeHello(rpc::ROLE_REMOTE_CALLER, options_.token);
        hello.mutable_hello()->set_job_id(options_.job_id.Binary());
        hello.mutable_hello()->set_worker_id(options_.worker_id.Binary());
        rpc::AsyncConnectAndHello(loop_.context(), daemon, hello, std::chrono::seconds(10),
                                  std::move(done));
      },
      options_.submitter.max_frame_bytes);
  control_ = std::make_unique<DaemonControlClient>(*daemon_,
                                                   [this](bool blocked) { SetBlocked(blocked); });
  return Status::OK();
}

void CoreWorker::Accept() {
  acceptor_->async_accept([this](const asio::error_code& ec, rpc::UnixSocket sock) {
    if (ec) {
      if (shut_down_ || ec == asio::error::operation_aborted) return;
      // Out of descriptors, most likely: back off instead of spinning.
      PRISM_LOG_WARN("accept: {}; retrying in 100 ms", ec.message());
      auto timer =
          std::make_shared<asio::steady_timer>(loop_.context(), std::chrono::milliseconds(100));
      timer->async_wait([this, timer](const asio::error_code&) {
        if (!shut_down_) Accept();
      });
      return;
    }
    auto conn = rpc::Connection::Create(std::move(sock), options_.submitter.max_frame_bytes);
    if (executor_) conn->ShareReads();  // callers' connections: see TaskExecutor::SetReadNext
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

void CoreWorker::TakePush(rpc::Connection& conn, rpc::Envelope& msg) {
  auto self = std::static_pointer_cast<rpc::Connection>(conn.shared_from_this());
  owner_clients_->RecordCaller(msg.push_task().spec().caller().worker_id(), self);
  if (std::shared_ptr<rpc::Envelope> frame = conn.HoldFrame()) {
    // Parsed on an arena: the task stays there, freed in one piece once it has run.
    executor_->Enqueue(std::shared_ptr<const rpc::PushTask>(std::move(frame), &msg.push_task()),
                       std::move(self));
  } else {
    executor_->Enqueue(std::move(*msg.mutable_push_task()), std::move(self));
  }
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
        TakePush(conn, msg);
        return;
      }
      break;
    case rpc::Envelope::kCancelCall:
      if (GlobalCallCanceller() && TaskId::IsValidBinary(msg.cancel_call().task_id())) {
        GlobalCallCanceller()(TaskId::FromBinary(msg.cancel_call().task_id()));
      }
      return;
    default:
      if (owner_service_->Handle(conn, msg)) return;
      break;
  }
  rpc::Envelope err;
  err.mutable_error()->set_code(static_cast<uint32_t>(StatusCode::kInvalidArgument));
  err.mutable_error()->set_message("unexpected message kind " + std::to_string(msg.body_case()));
  conn.Send(err);
}

void CoreWorker::KeepArgumentExports() {
  // Device objects packed into a task's arguments (or a Put) stay with their producer, this
  // process, for as long as it lives: the running task's own result must not release them.
  (void)gpu_tasks_->TakeTaskExports();
}

bool CoreWorker::RebuildLost(const internal::RefHandle& ref) {
  objects_->CheckCurrent(ref);
  if (!objects_->IsSelf(ref.owner()) || shut_down_ || !submitter_) return false;
  if (loop_.context().get_executor().running_in_this_thread()) return submitter_->Rebuild(ref.id());
  auto answered = std::make_shared<std::promise<bool>>();
  std::future<bool> result = answered->get_future();
  ObjectId id = ref.id();
  asio::post(loop_.context(),
             [this, id, answered] { answered->set_value(submitter_->Rebuild(id)); });
  return result.wait_for(std::chrono::seconds(30)) == std::future_status::ready && result.get();
}

void CoreWorker::OnFreed(FreedObject f) {
  if (!f.device_producer.socket_path.empty() && !shut_down_) {
    owner_clients_->ReleaseDeviceResult(f.id, f.device_producer);
  }
  if (!f.borrowed && !shut_down_ && submitter_ && submitter_->lineage_size() > 0) {
    // Its task goes too, if kept (also when it went while being rebuilt, with no value).
    ObjectId id = f.id;
    asio::post(loop_.context(), [this, id] {
      if (submitter_) submitter_->DropLineage(id);
    });
  }
  if (f.actor && !shut_down_) {
    rpc::Envelope env;
    env.mutable_kill_actor()->set_actor_id(TaskIdOf(f.id).Binary());
    env.mutable_kill_actor()->set_no_restart(true);
    env.mutable_kill_actor()->set_reason("all its handles went out of scope");
    daemon_->Send(env);
    return;
  }
  if (f.in_store) {
    object_store_->Delete({f.id});
    return;
  }
  if (!f.borrowed || f.registered == 0 || shut_down_) return;
  owner_clients_->QueueRelease(f.owner, f.id, f.registered);
}

void CoreWorker::OnWorkerDied(const WorkerId& id) {
  owner_service_->WorkerDied(id);
  // Results whose device objects it kept are rebuilt by running their tasks again.
  if (submitter_) submitter_->ProducerDied(id);
}

Submitter CoreWorker::SubmitterOf(const TaskId& task_id) const {
  return Submitter{task_id, task_context_->Current(), options_.job_id, address_};
}

bool CoreWorker::InTaskOfWorker() const {
  return options_.role == rpc::ROLE_WORKER && TaskContext::InTask();
}

void CoreWorker::SetBlocked(bool blocked) {
  if (!InTaskOfWorker()) return;
  MutexLock lock(blocked_mu_);
  blocked_ += blocked ? 1 : -1;
  if ((blocked && blocked_ == 1) || (!blocked && blocked_ == 0)) {
    rpc::Envelope env;
    env.mutable_worker_blocked()->set_blocked(blocked);
    daemon_->Send(env);
  }
}

PlacementGroup CoreWorker::CreatePlacementGroup(const PlacementGroupOptions& options) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->CreatePlacementGroup(options);
}

bool CoreWorker::WaitPlacementGroup(uint64_t id, std::chrono::milliseconds timeout) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->WaitPlacementGroup(id, timeout);
}

void CoreWorker::RemovePlacementGroup(uint64_t id) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  control_->RemovePlacementGroup(id);
}

PlacementGroup CoreWorker::GetPlacementGroup(const std::string& name) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->GetPlacementGroup(name);
}

bool CoreWorker::KvPut(const std::string& ns, const std::string& key, const std::string& value,
                       bool overwrite) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->KvPut(ns, key, value, overwrite);
}

std::optional<std::string> CoreWorker::KvGet(const std::string& ns, const std::string& key) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->KvGet(ns, key);
}

bool CoreWorker::KvDelete(const std::string& ns, const std::string& key) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  return control_->KvDelete(ns, key);
}

internal::ActorRef CoreWorker::CurrentActor() {
  TaskRunner::HostedActor actor = runner_->hosted_actor();
  const ActorId& id = actor.id;
  const internal::OwnerAddress& owner = actor.owner;
  if (id.IsNil()) throw InvalidArgumentError("this process hosts no actor");
  // A borrowed ref to the actor's handle object, as any handle passed to it would hold.
  return internal::ActorRef{id, MakeRef(ReturnObjectId(id, 1), owner)};
}

RuntimeContextInfo CoreWorker::RuntimeContext() const {
  RuntimeContextInfo c;
  c.job_id = options_.job_id.Hex();
  c.worker_id = WorkerId::FromBinary(address_.worker_id).Hex();
  c.node_id = NodeId::FromBinary(address_.node_id).Hex();
  c.is_worker = options_.role == rpc::ROLE_WORKER;
  if (TaskContext::InTask()) c.task_id = task_context_->Current().Hex();
  TaskRunner::HostedActor actor = runner_->hosted_actor();
  if (!actor.id.IsNil()) {
    c.actor_id = actor.id.Hex();
    c.actor_restarts = actor.restarts;
    c.resources = actor.resources;
    c.actor_name = actor.name;
  }
  const rpc::TaskSpec* spec = TaskContext::Spec();
  if (spec != nullptr && !spec->has_actor_creation() && spec->actor_id().empty()) {
    for (const auto& r : spec->resources())
      c.resources[r.name()] = static_cast<double>(r.milli()) / kMilli;
  }
  c.gpu_ids = GpuIds();
  return c;
}

std::vector<int> CoreWorker::GpuIds() const {
  // An actor's GPUs are its own on every thread (its event loop, its concurrency groups' threads).
  if (!runner_->actor_gpu_ids().empty()) return runner_->actor_gpu_ids();
  if (!TaskContext::InTask()) return {};
  return TaskContext::GpuIds();
}

internal::ActorRef CoreWorker::CreateActor(const std::string& factory,
                                           std::vector<internal::SerializedArg> args,
                                           const ActorOptions& options) {
  KeepArgumentExports();
  if (shut_down_) throw RuntimeError("prism is shut down");
  CheckedOptions checked = CheckActorOptions(options);
  TaskId task_id = task_context_->NextChild();
  rpc::CreateActor create = BuildActorCreation(SubmitterOf(task_id), factory, options, checked);
  rpc::TaskSpec& spec = *create.mutable_spec();
  // The factory's arguments travel as values (a restart calls it again with the same ones), so
  // ref arguments are read here first.
  std::vector<internal::RefPtr> keep;
  for (auto& a : args) {
    if (a.ref) {
      objects_->CheckCurrent(*a.ref);
      auto views = Get({a.ref.get()}, -1);
      spec.add_args()->set_value(std::string(views[0].bytes));
      keep.push_back(a.ref);
    } else {
      spec.add_args()->set_value(std::move(a.value));
    }
    for (auto& n : a.nested) keep.push_back(std::move(n));
  }
  // The actor's handle object: its lifetime is the actor's (unless detached).
  ObjectId handle_id = ReturnObjectId(task_id, 1);
  internal::RefPtr lifetime = objects_->NewHandle(handle_id);
  StoredObject marker = StoredObject::Value(internal::Pack(true));
  rpc::ActorUpdate update = control_->RegisterActor(std::move(create));
  marker.actor_handle = !options.detached;
  store_.Put(handle_id, std::move(marker));
  {
    MutexLock lock(actor_mu_);
    if (!keep.empty()) actor_arg_refs_[task_id] = std::move(keep);
  }
  asio::post(loop_.context(), [this, update] { actor_submitter_->OnUpdate(update); });
  return internal::ActorRef{task_id, lifetime};
}

internal::RefPtr CoreWorker::SubmitActorTask(const internal::ActorRef& actor,
                                             const std::string& method,
                                             std::vector<internal::SerializedArg> args) {
  return SubmitActorTaskReturns(actor, method, std::move(args), 1).front();
}

std::vector<internal::RefPtr> CoreWorker::SubmitActorTaskReturns(
    const internal::ActorRef& actor, const std::string& method,
    std::vector<internal::SerializedArg> args, uint32_t num_returns) {
  KeepArgumentExports();
  CheckNumReturns(num_returns);
  if (shut_down_) throw RuntimeError("prism is shut down");
  objects_->CheckCurrent(*actor.lifetime);
  TaskId task_id = task_context_->NextChild();
  PendingTask t =
      BuildActorCall(SubmitterOf(task_id), actor.id, method, std::move(args), num_returns,
                     [this](const internal::RefHandle& r) { objects_->CheckCurrent(r); });
  t.actor_lifetime = actor.lifetime;  // the actor lives at least until its calls are done
  std::vector<internal::RefPtr> handles;
  for (uint32_t i = 1; i <= num_returns; ++i)
    handles.push_back(objects_->NewHandle(ReturnObjectId(task_id, i)));
  actor_submitter_->Submit(actor.id, std::move(t));
  return handles;
}

void CoreWorker::CancelTask(const internal::RefHandle& ref, bool force) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  objects_->CheckCurrent(ref);
  if (!objects_->IsSelf(ref.owner())) {
    throw InvalidArgumentError(
        "object " + ref.id().Hex() +
        " belongs to another process: only the process that submitted a task can "
        "cancel it");
  }
  if (IsPutObject(ref.id()))
    throw InvalidArgumentError("object " + ref.id().Hex() + " was Put, not returned by a task");
  TaskId task = TaskIdOf(ref.id());
  asio::post(loop_.context(), [this, task, force] {
    if (!submitter_->Cancel(task, force)) actor_submitter_->Cancel(task);
  });
}

void CoreWorker::ExitActor(const std::string& reason) {
  ActorId self = actor_id();
  if (self.IsNil()) throw InvalidArgumentError("exit_actor() was called outside an actor");
  std::fflush(nullptr);
  if (output_) output_->Stop();  // what it printed reaches the driver before the kill
  control_->AnnounceExit(self, reason);
  // The daemon ends this process now; should it not (it is gone), end it here.
  std::this_thread::sleep_for(std::chrono::seconds(10));
  std::_Exit(0);
}

void CoreWorker::KillActor(const ActorId& id, bool no_restart) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  // Done when the actor is dead: calls made after Kill() returns know it.
  rpc::ActorUpdate update = control_->KillActor(id, no_restart, "it was killed with prism::Kill");
  asio::post(loop_.context(), [this, update] { actor_submitter_->OnUpdate(update); });
}

internal::ActorRef CoreWorker::GetActorByName(const std::string& name,
                                              const std::string& ray_namespace) {
  if (shut_down_) throw RuntimeError("prism is shut down");
  const rpc::ActorUpdate u = control_->LookupActor(name, ray_namespace);
  ActorId id = ActorId::FromBinary(u.actor_id());
  internal::OwnerAddress owner = rpc::FromWire(u.owner());
  internal::RefPtr lifetime = MakeRef(ReturnObjectId(id, 1), owner);
  asio::post(loop_.context(), [this, u] { actor_submitter_->OnUpdate(u); });
  return internal::ActorRef{id, lifetime};
}

std::shared_ptr<internal::StreamHandle> CoreWorker::SubmitStreamingTask(
    const std::string& function, std::vector<internal::SerializedArg> args,
    const TaskOptions& options) {
  TaskStream::Runtime runtime;
  runtime.cancel = [this](const internal::RefHandle& completion) {
    CancelTask(completion, /*force=*/true);
  };
  runtime.blocked = [this](bool waiting) { SetBlocked(waiting); };
  auto stream = std::make_shared<TaskStream>(std::move(runtime));
  SubmitTask(function, std::move(args), options, stream);
  return stream;
}

void CoreWorker::FetchBorrowed(const ObjectId& id, const internal::OwnerAddress& owner,
                               MemoryStore::Callback done) {
  owner_clients_->Fetch(id, owner, std::move(done));
}

bool CoreWorker::IsSelf(const internal::OwnerAddress& owner) { return objects_->IsSelf(owner); }

internal::RefPtr CoreWorker::NestedRef(const rpc::NestedRef& n) {
  internal::OwnerAddress owner = rpc::FromWire(n.owner());
  ObjectId id = ObjectId::FromBinary(n.object_id());
  if (n.borrow_registered() && !objects_->IsSelf(owner)) {
    // The worker registered us at the owner already: count that, and do not register again.
    // (AddBorrowedRef counts it itself when it finds us unregistered.)
    if (!store_.AddBorrowedRef(id, owner)) store_.CreditRegistration(id, 1);
    return std::make_shared<internal::RefHandle>(id, owner, options_.runtime_generation);
  }
  return objects_->MakeRef(id, owner);
}

void CoreWorker::DiscardStored(const ObjectId& id) { object_store_->Delete({id}); }

bool CoreWorker::ProducerGone(const internal::OwnerAddress& producer) {
  // A process of this node: its socket refuses connections once it is gone.
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, producer.socket_path.c_str(), sizeof(addr.sun_path) - 1);
  bool gone = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
              (errno == ECONNREFUSED || errno == ENOENT);
  ::close(fd);
  return gone;
}

void CoreWorker::DiscardDevice(const ObjectId& id, const internal::OwnerAddress& producer) {
  if (!shut_down_) owner_clients_->ReleaseDeviceResult(id, producer);
}

void CoreWorker::RemoveBorrowers(const rpc::RemoveBorrowers& released) {
  owner_service_->RemoveBorrowers(released);
}

void CoreWorker::StreamItem(const TaskId& task, uint64_t index, StoredObject value) {
  ObjectId id = ReturnObjectId(task, static_cast<uint32_t>(index + 1));
  std::shared_ptr<TaskStream> stream;
  {
    MutexLock lock(streams_mu_);
    auto it = streams_.find(task);
    if (it != streams_.end()) stream = it->second.lock();
  }
  bool in_store = value.in_store;
  if (!stream) {
    if (in_store) object_store_->Delete({id});  // nobody reads the stream any more
    return;
  }
  internal::RefPtr handle = objects_->NewHandle(id);
  if (!store_.Put(id, std::move(value)) && in_store) object_store_->Delete({id});
  stream->Push(std::move(handle));
}

void CoreWorker::StreamWrite(const internal::EncodedValue& value) { runner_->StreamWrite(value); }

std::vector<internal::RefPtr> CoreWorker::SubmitTaskReturns(
    const std::string& function, std::vector<internal::SerializedArg> args,
    const TaskOptions& options, uint32_t num_returns) {
  CheckNumReturns(num_returns);
  return SubmitTaskImpl(function, std::move(args), options, nullptr, num_returns);
}

internal::RefPtr CoreWorker::SubmitTask(const std::string& function,
                                        std::vector<internal::SerializedArg> args,
                                        const TaskOptions& options,
                                        std::shared_ptr<TaskStream> stream) {
  return SubmitTaskImpl(function, std::move(args), options, std::move(stream), 1).front();
}

std::vector<internal::RefPtr> CoreWorker::SubmitTaskImpl(const std::string& function,
                                                         std::vector<internal::SerializedArg> args,
                                                         const TaskOptions& options,
                                                         std::shared_ptr<TaskStream> stream,
                                                         uint32_t num_returns) {
  KeepArgumentExports();
  if (shut_down_) throw RuntimeError("prism is shut down");
  CheckedOptions checked = CheckTaskOptions(options);
  TaskId task_id = task_context_->NextChild();
  PendingTask t =
      BuildTask(SubmitterOf(task_id), function, std::move(args), options, std::move(checked),
                num_returns, [this](const internal::RefHandle& r) { objects_->CheckCurrent(r); });
  internal::RefPtr handle = objects_->NewHandle(t.return_id);
  std::vector<internal::RefPtr> handles{handle};
  // Every return object is referenced before the task can finish (an unreferenced result is
  // dropped).
  for (uint32_t i = 2; i <= num_returns; ++i)
    handles.push_back(objects_->NewHandle(ReturnObjectId(task_id, i)));
  if (stream) {
    t.spec->set_streaming(true);
    t.lease.exclusive = true;
    stream->SetCompletion(handle);
    {
      MutexLock lock(streams_mu_);
      streams_[task_id] = stream;
    }
    std::weak_ptr<TaskStream> weak = stream;
    store_.OnReady(t.return_id, [this, weak, task_id](const StoredObject& end) {
      if (auto s = weak.lock()) s->End(end.is_error());
      MutexLock lock(streams_mu_);
      streams_.erase(task_id);
    });
  }
  submitter_->Submit(std::move(t));
  return handles;
}

internal::RefPtr CoreWorker::Put(const internal::EncodedValue& value) {
  KeepArgumentExports();
  if (shut_down_) throw RuntimeError("prism is shut down");
  return objects_->Put(value);
}

internal::RefPtr CoreWorker::MakeRef(const ObjectId& id, internal::OwnerAddress owner) {
  return objects_->MakeRef(id, std::move(owner));
}

std::vector<internal::EncodedView> CoreWorker::Get(
    const std::vector<const internal::RefHandle*>& refs, int64_t timeout_ms) {
  return objects_->Get(refs, timeout_ms);
}

void CoreWorker::WhenReady(const internal::RefHandle& ref, std::function<void()> ready) {
  objects_->WhenReady(ref, std::move(ready));
}

std::vector<bool> CoreWorker::Wait(const std::vector<const internal::RefHandle*>& refs,
                                   size_t num_returns, int64_t timeout_ms) {
  return objects_->Wait(refs, num_returns, timeout_ms);
}

rpc::StatusReply CoreWorker::NodeStatus() const {
  return ReadNodeStatus(options_.daemon_socket, options_.token);
}

ObjectStoreStats CoreWorker::object_store_stats() const { return StoreStatsOf(NodeStatus()); }

std::vector<NodeInfo> CoreWorker::Nodes() const { return NodesOf(NodeStatus()); }

void CoreWorker::RunTaskLoop() {
  if (executor_) executor_->Run();
}

void CoreWorker::Shutdown() {
  if (shut_down_.exchange(true)) return;
  // Device objects being sent to others: their sends end (within their timeout) first.
  gpu_tasks_->WaitForSends();
  gpu_tasks_->SetPeers({});  // imports closing from here on are not reported
  {
    // Streams outliving the runtime must not call into it.
    MutexLock lock(streams_mu_);
    for (auto& [task, weak] : streams_) {
      if (auto s = weak.lock()) s->Detach();
    }
  }
  if (executor_) executor_->Stop();
  if (output_) output_->Stop();  // forwards what is left while the daemon connection is open
  if (!loop_.started()) {        // Start() failed before the loop ran: nothing is connected
    ::unlink(address_.socket_path.c_str());
    return;
  }
  std::promise<void> done;
  asio::post(loop_.context(), [this, &done] {
    asio::error_code ec;
    if (acceptor_) acceptor_->close(ec);
    if (submitter_)
      submitter_->FailAll(StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down"));
    if (actor_submitter_) {
      actor_submitter_->FailAll(StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down"));
    }
    for (auto& p : std::vector<std::shared_ptr<rpc::Connection>>(peers_.begin(), peers_.end())) {
      p->Close(Status::Cancelled("shutting down"));
    }
    owner_clients_->CloseAll();
    if (daemon_) daemon_->Close();
    done.set_value();
  });
  done.get_future().wait_for(std::chrono::seconds(5));
  loop_.Stop();
  if (executor_) executor_->Join();  // a threaded actor's added threads
  store_.FailAllPending(StoredObject::Error(rpc::ERROR_SYSTEM, "prism was shut down"));
  ::unlink(address_.socket_path.c_str());
}

}  // namespace prism

#include "worker/task_runner.h"

#include <cxxabi.h>
#include <prism/errors.h>
#include <prism/gpu/profiling.h>
#include <prism/remote.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "base/logging.h"
#include "base/mutex.h"
#include "base/resources.h"
#include "rpc/address.h"
#include "worker/pending_task.h"
#include "worker/task_context.h"

namespace prism {
namespace {

// The streaming task running on this thread: where its values go.
struct StreamContext {
  std::shared_ptr<rpc::Connection> to;  // null: not a streaming task
  std::string task_id;
  uint32_t attempt = 0;
  WorkerId caller;
  uint64_t skip = 0;  // values the caller has from an earlier attempt
  uint64_t written = 0;
};
thread_local StreamContext tl_stream;

ForeignExecutor& GlobalForeignExecutor() {
  static ForeignExecutor executor;
  return executor;
}

// The task failed: its reply carries the error instead of results.
void Fail(const rpc::TaskSpec& spec, rpc::ErrorKind kind, std::string type, std::string message,
          rpc::TaskReply* reply) {
  reply->clear_returns();
  auto* e = reply->mutable_error();
  e->set_kind(kind);
  e->set_type_name(std::move(type));
  e->set_message(std::move(message));
  e->set_function(spec.name().empty() ? spec.function() : spec.name());
}

}  // namespace

void SetForeignExecutor(ForeignExecutor executor) { GlobalForeignExecutor() = std::move(executor); }

TaskRunner::HostedActor TaskRunner::hosted_actor() const {
  HostedActor a;
  {
    MutexLock lock(actor_mu_);
    a.id = actor_id_;
    a.owner = actor_owner_;
    a.name = actor_name_;
  }
  a.restarts = actor_restarts_;
  a.resources = actor_resources_;
  return a;
}

void TaskRunner::StreamWrite(const internal::EncodedValue& value) {
  StreamContext& c = tl_stream;
  if (!c.to)
    throw InvalidArgumentError(
        "StreamWriter::Write called outside the streaming task it was made for");
  uint64_t index = ++c.written;
  if (index <= c.skip) return;  // the caller has it from an earlier run of this task
  if (index > kMaxStreamValues) {
    throw InvalidArgumentError("a streaming task may write at most " +
                               std::to_string(kMaxStreamValues) + " values");
  }
  rpc::Envelope env;
  auto* item = env.mutable_stream_item();
  item->set_task_id(c.task_id);
  item->set_attempt(c.attempt);
  item->set_index(index);
  ObjectId id = ReturnObjectId(TaskId::FromBinary(c.task_id), static_cast<uint32_t>(index + 1));
  results_.Store(id, value, c.caller, item->mutable_item());
  // Registrations of refs lent to the caller reach their owners before the caller can drop them.
  owners_.WaitForRegistrations();
  c.to->Send(env);
}

ExecutedTask TaskRunner::Execute(std::shared_ptr<const rpc::PushTask> push,
                                 const std::shared_ptr<rpc::Connection>& from) {
  const rpc::TaskSpec& spec = push->spec();
  tl_stream = StreamContext{};
  if (spec.streaming()) {
    tl_stream.to = from;
    tl_stream.task_id = spec.task_id();
    tl_stream.attempt = spec.attempt();
    tl_stream.caller = WorkerId::FromBinary(spec.caller().worker_id());
    tl_stream.skip = spec.stream_skip();
  }
  struct EndStream {
    ~EndStream() { tl_stream = StreamContext{}; }
  } end_stream;
  TaskContext::Running running(*push);
  if (spec.has_actor_creation()) {  // for the actor's life
    actor_gpu_ids_ = TaskContext::GpuIds();
    actor_restarts_ = spec.attempt();
    actor_resources_.clear();
    for (const auto& r : spec.resources())
      actor_resources_[r.name()] = static_cast<double>(r.milli()) / kMilli;
  }
  ExecutedTask done;
  rpc::TaskReply& reply = done.reply;
  reply.set_task_id(spec.task_id());
  reply.set_attempt(spec.attempt());
  auto fail = [&](rpc::ErrorKind kind, std::string type, std::string message) {
    Fail(spec, kind, std::move(type), std::move(message), &reply);
  };
  // What runs: a remote function, an actor's factory (this worker becomes the actor's process),
  // or a method of the actor this worker hosts.
  auto& registry = internal::FunctionRegistry::Instance();
  if (output_) {
    std::string who =
        spec.has_actor_creation()
            ? (spec.actor_creation().name().empty() ? spec.function()
                                                    : spec.actor_creation().name())
            : (!spec.actor_id().empty() && !actor_label_.empty() ? actor_label_ : spec.name());
    output_->SetLabel("(" + who + label_pid_);
  }
  std::function<ReturnValues(const std::vector<std::string_view>&,
                             const std::shared_ptr<const void>&)>
      run;
  if (spec.streaming() && (spec.has_actor_creation() || !spec.actor_id().empty())) {
    fail(rpc::ERROR_ARGUMENT, "", "actor creations and actor methods do not stream");
    return done;
  }
  if (spec.has_actor_creation()) {
    {
      MutexLock lock(actor_mu_);
      actor_id_ = ActorId::FromBinary(spec.actor_creation().actor_id());
      actor_owner_ = rpc::FromWire(spec.actor_creation().owner());
      actor_name_ = spec.actor_creation().name();
    }
    const internal::ActorFactoryEntry* factory = registry.FindFactory(spec.function());
    if (factory != nullptr) {
      uint32_t concurrency = std::max<uint32_t>(1, spec.actor_creation().max_concurrency());
      std::string actor_name = spec.actor_creation().name();
      run = [this, factory, concurrency, actor_name](const std::vector<std::string_view>& args,
                                                     const std::shared_ptr<const void>& source) {
        actor_instance_ = factory->create(args, source);
        actor_type_ = factory->type;
        actor_label_ = actor_name.empty() ? factory->type : actor_name;
        executor_->SetThreads(static_cast<int>(concurrency));
        return ReturnValues{internal::EncodeOwned(true)};
      };
    }
  } else if (!spec.actor_id().empty()) {
    const internal::ActorMethodEntry* method = registry.FindMethod(spec.function());
    if (method != nullptr) {
      if (!actor_instance_) {
        fail(rpc::ERROR_SYSTEM, "",
             "this worker (pid " + std::to_string(getpid()) + ") hosts no actor");
        return done;
      }
      if (method->type != actor_type_) {
        fail(rpc::ERROR_ARGUMENT, "",
             spec.function() + " is a method of " + method->type + ", but this actor is a " +
                 actor_type_);
        return done;
      }
      run = [this, method](const std::vector<std::string_view>& args,
                           const std::shared_ptr<const void>& source) {
        return ReturnValues{method->invoke(actor_instance_.get(), args, source)};
      };
    }
  } else if (const internal::FunctionEntry* fn = registry.Find(spec.function()); fn != nullptr) {
    if (fn->streaming != spec.streaming()) {
      fail(rpc::ERROR_ARGUMENT, "",
           fn->streaming
               ? spec.function() +
                     " writes a stream (it takes a StreamWriter first): call it as a streaming task"
               : spec.function() + " is not a streaming function (it takes no StreamWriter)");
      return done;
    }
    run = [fn](const std::vector<std::string_view>& args,
               const std::shared_ptr<const void>& source) {
      return ReturnValues{fn->invoke(args, source)};
    };
  }
  if (!run && spec.function().rfind("py:", 0) == 0 && GlobalForeignExecutor()) {
    // Another language's function, actor class or method: its executor runs it (and keeps the
    // actor's object); this side keeps the actor's bookkeeping.
    const ForeignExecutor& foreign = GlobalForeignExecutor();
    const rpc::TaskSpec* s = &spec;
    if (!spec.actor_id().empty() && !actor_instance_) {
      fail(rpc::ERROR_SYSTEM, "",
           "this worker (pid " + std::to_string(getpid()) + ") hosts no actor");
      return done;
    }
    ReplyLater later = [this, push, from](std::function<ReturnValues()> produce) {
      SendLateReply(*push, *from, produce);
    };
    run = [this, &foreign, s, later](const std::vector<std::string_view>& args,
                                     const std::shared_ptr<const void>& source) {
      ReturnValues out = foreign(*s, args, source, later);
      if (s->has_actor_creation()) {
        actor_instance_ = std::make_shared<int>(0);  // the object lives in the foreign runtime
        actor_type_ = "foreign";
        if (!s->actor_creation().name().empty()) {
          actor_label_ = s->actor_creation().name();
        } else if (actor_label_.empty()) {
          actor_label_ = s->name();  // the foreign runtime may have named it (SetActorLabel)
        }
        uint32_t concurrency = std::max<uint32_t>(1, s->actor_creation().max_concurrency());
        executor_->SetThreads(static_cast<int>(concurrency));
      }
      return out;
    };
  }
  if (!run) {
    fail(rpc::ERROR_FUNCTION_NOT_FOUND, "",
         "function '" + spec.function() + "' is not registered in the worker (pid " +
             std::to_string(getpid()) + "); register it with PRISM_REMOTE");
    return done;
  }
  // Arguments are inline bytes or views into the node's store, pinned while anything (the
  // task, or a Buffer it kept) still reads them.
  struct Source {
    std::shared_ptr<const rpc::PushTask> push;
    std::vector<std::shared_ptr<const void>> pins;
  };
  auto source = std::make_shared<Source>();
  source->push = push;
  std::vector<std::string_view> args(static_cast<size_t>(spec.args_size()));
  std::vector<ObjectId> stored;
  std::vector<size_t> stored_at;
  for (int i = 0; i < spec.args_size(); ++i) {
    const auto& a = spec.args(i);
    if (a.kind_case() == rpc::TaskArg::kValue) {
      args[static_cast<size_t>(i)] = a.value();
    } else if (a.kind_case() == rpc::TaskArg::kStoreObject &&
               ObjectId::IsValidBinary(a.store_object())) {
      stored.push_back(ObjectId::FromBinary(a.store_object()));
      stored_at.push_back(static_cast<size_t>(i));
    } else {
      fail(rpc::ERROR_SYSTEM, "", "an argument reached the worker unresolved");
      return done;
    }
  }
  if (!stored.empty()) {
    auto views = objects_.GetFromStore(stored, std::nullopt);
    std::string missing;
    for (size_t k = 0; k < views.size(); ++k) {
      if (!views[k].status.ok()) {
        missing = "argument object " + stored[k].Hex() +
                  " is not in the object store: " + views[k].status.message();
        continue;
      }
      std::shared_ptr<StoreClient> client = host_store_;
      ObjectId id = stored[k];
      source->pins.emplace_back(views[k].data, [client, id](const void*) { client->Release(id); });
      args[stored_at[k]] =
          std::string_view(reinterpret_cast<const char*>(views[k].data), views[k].size);
    }
    if (!missing.empty()) {
      source.reset();  // releases the pins taken
      fail(rpc::ERROR_OBJECT_LOST, "", missing);
      owners_.WaitForRegistrations();
      return done;
    }
  }
  // GPU tasks get a context (their device, a stream of the pool, capped memory) for the run;
  // an actor's creation makes the one its calls share.
  std::vector<int> task_gpus = !TaskContext::GpuIds().empty() || spec.actor_id().empty()
                                   ? TaskContext::GpuIds()
                                   : actor_gpu_ids_;
  if (!task_gpus.empty() && spec.actor_id().empty() && !spec.has_actor_creation() &&
      !actor_instance_) {
    // Stateless GPU tasks of this worker's lease run side by side, each on its own stream of the
    // pool: a task that waits (for its stream, for a Get) lets the next one start.
    executor_->AllowThreads(GpuTasks::kStreamsPerDevice);
  }
  gpu_.Enter(task_gpus, spec.gpu_memory());
  struct LeaveGpu {
    GpuTasks* gpu;
    bool keep;
    ~LeaveGpu() { gpu->Leave(keep); }
  } leave_gpu{&gpu_, spec.has_actor_creation()};
  const std::string& task_name = spec.name().empty() ? spec.function() : spec.name();
  gpu::NvtxRange task_range("prism task " + task_name);
  int64_t started_us = timeline_ ? TimelineRecorder::NowUs() : 0;
  std::unique_ptr<gpu::Event> gpu_start, gpu_end;
  gpu::Context* gpu_context = timeline_ ? gpu_.CurrentOrNull() : nullptr;
  if (gpu_context != nullptr) {
    auto a = gpu_context->backend().CreateEvent(gpu_context->device(), /*timing=*/true);
    auto b = gpu_context->backend().CreateEvent(gpu_context->device(), /*timing=*/true);
    if (a.ok() && b.ok() && (*a)->Record(gpu_context->stream()).ok()) {
      gpu_start = std::move(a).value();
      gpu_end = std::move(b).value();
    }
  }
  try {
    auto out_holder =
        std::make_shared<ReturnValues>(run(args, std::static_pointer_cast<const void>(source)));
    // The result (and the refs in it) lives until the reply is out.
    done.hold = out_holder;
    source.reset();
    ObjectId return_id = ReturnObjectId(TaskId::FromBinary(spec.task_id()), 1);
    results_.StoreAll(spec, *out_holder, reply);
    if (std::vector<std::string> exported = gpu_.TakeTaskExports(); !exported.empty()) {
      if (reply.returns_size() != 1) {
        // Which return holds which device object is not known here, so none could be freed
        // on its own: such results are refused rather than kept forever.
        gpu_.Forget(exported);
        results_.DropStored(reply);
        throw StoreWriteError(
            "a task with num_returns > 1 cannot return device tensors; return them "
            "from a task with one return value");
      }
      // The result holds device objects kept here: its owner says when they may go.
      gpu_.Associate(return_id, exported);
      rpc::ToWire(self_, reply.mutable_returns(0)->mutable_device_producer());
    }
  } catch (const internal::ArgumentError& e) {
    fail(rpc::ERROR_ARGUMENT, "", e.what());
  } catch (const ReplyDeferred&) {
    done.deferred = true;
    return done;
  } catch (const ForeignTaskError& e) {
    fail(rpc::ERROR_TASK, e.type(), e.what());
    reply.mutable_error()->set_payload(e.payload());
  } catch (const ObjectStoreFullError& e) {
    fail(rpc::ERROR_OBJECT_STORE_FULL, "", e.what());
  } catch (const ObjectLostError& e) {
    // (An argument's device objects went with their producer: its owner may rebuild it and
    // run this task again.)
    fail(rpc::ERROR_OBJECT_LOST, "", e.what());
  } catch (const StoreWriteError& e) {
    fail(rpc::ERROR_SYSTEM, "", std::string("cannot store the result: ") + e.what());
  } catch (const std::exception& e) {
    fail(rpc::ERROR_TASK, internal::Demangle(typeid(e).name()), e.what());
  } catch (...) {
    std::type_info* t = abi::__cxa_current_exception_type();
    fail(rpc::ERROR_TASK, t != nullptr ? internal::Demangle(t->name()) : "unknown",
         "a non-standard exception was thrown");
  }
  if (timeline_) {
    std::string id = TaskId::FromBinary(spec.task_id()).Hex();
    timeline_->Task(task_name, id, started_us, TimelineRecorder::NowUs());
    if (gpu_start && gpu_end->Record(gpu_context->stream()).ok()) {
      timeline_->GpuTask(task_name, id, started_us, gpu_context->stream().name(),
                         std::move(gpu_start), std::move(gpu_end));
    }
  }
  // Tensors packed for a result that was never delivered (the task failed after packing): nobody
  // can reach them.
  gpu_.Forget(gpu_.TakeTaskExports());
  if (!task_gpus.empty()) {
    // A faulted kernel poisons the device for this process: the worker goes (its tasks are
    // retried elsewhere, as after a crash) and the daemon starts a fresh one.
    if (Status fault = gpu_.DeviceFault(); !fault.ok()) {
      PRISM_LOG_ERROR("worker {} exits: {}", getpid(), fault.ToString());
      std::fflush(nullptr);
      std::_Exit(70);
    }
  }
  // Registrations this task made (refs it keeps, refs lent to the caller) reach their owners
  // before the caller may drop the refs that protected them.
  owners_.WaitForRegistrations();
  return done;
}

void TaskRunner::SendLateReply(const rpc::PushTask& push, rpc::Connection& to,
                               const std::function<ReturnValues()>& produce) {
  const rpc::TaskSpec& spec = push.spec();
  rpc::Envelope env;
  rpc::TaskReply& reply = *env.mutable_task_reply();
  reply.set_task_id(spec.task_id());
  reply.set_attempt(spec.attempt());
  auto fail = [&](rpc::ErrorKind kind, std::string type, std::string message) {
    Fail(spec, kind, std::move(type), std::move(message), &reply);
  };
  std::shared_ptr<ReturnValues> hold;
  try {
    hold = std::make_shared<ReturnValues>(produce());
    results_.StoreAll(spec, *hold, reply);
  } catch (const ForeignTaskError& e) {
    fail(rpc::ERROR_TASK, e.type(), e.what());
    reply.mutable_error()->set_payload(e.payload());
  } catch (const ObjectStoreFullError& e) {
    fail(rpc::ERROR_OBJECT_STORE_FULL, "", e.what());
  } catch (const ObjectLostError& e) {
    // (An argument's device objects went with their producer: its owner may rebuild it and
    // run this task again.)
    fail(rpc::ERROR_OBJECT_LOST, "", e.what());
  } catch (const std::exception& e) {
    fail(rpc::ERROR_SYSTEM, "", std::string("cannot send the result: ") + e.what());
  }
  owners_.WaitForRegistrations();
  if (!to.closed()) to.Send(env);
  hold.reset();  // after the reply, as for any task
}

}  // namespace prism

#include "worker/task_executor.h"

#include "base/ids.h"

#include <prism/remote.h>
#include <prism/serialization.h>

#include <cxxabi.h>
#include <unistd.h>

#include <string_view>
#include <typeinfo>

namespace prism {

TaskExecutor::TaskExecutor(std::function<void(const rpc::TaskSpec&)> before_task)
    : before_task_(std::move(before_task)) {}

void TaskExecutor::Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake = queue_.empty();
    queue_.push_back(Item{std::move(push), std::move(from)});
  }
  if (wake) cv_.notify_one();
}

void TaskExecutor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

void TaskExecutor::Run() {
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (item.from->closed()) continue;  // its owner is gone; nobody wants the result
    if (before_task_) before_task_(item.push.spec());
    rpc::Envelope env;
    *env.mutable_task_reply() = Execute(item.push.spec());
    item.from->Send(env);
  }
}

rpc::TaskReply TaskExecutor::Execute(const rpc::TaskSpec& spec) {
  rpc::TaskReply reply;
  reply.set_task_id(spec.task_id());
  reply.set_attempt(spec.attempt());
  auto fail = [&](rpc::ErrorKind kind, std::string type, std::string message) {
    auto* e = reply.mutable_error();
    e->set_kind(kind);
    e->set_type_name(std::move(type));
    e->set_message(std::move(message));
    e->set_function(spec.name().empty() ? spec.function() : spec.name());
    return reply;
  };
  const internal::FunctionEntry* fn = internal::FunctionRegistry::Instance().Find(spec.function());
  if (fn == nullptr) {
    return fail(rpc::ERROR_FUNCTION_NOT_FOUND, "",
                "function '" + spec.function() + "' is not registered in the worker (pid " +
                    std::to_string(getpid()) + "); register it with PRISM_REMOTE");
  }
  std::vector<std::string_view> args;
  args.reserve(static_cast<size_t>(spec.args_size()));
  for (const auto& a : spec.args()) {
    if (a.kind_case() != rpc::TaskArg::kValue) {
      return fail(rpc::ERROR_SYSTEM, "", "an argument reached the worker unresolved");
    }
    args.emplace_back(a.value());
  }
  try {
    std::string out = fn->invoke(args);
    if (out.size() + 4096 > rpc::kDefaultMaxFrameBytes) {
      return fail(rpc::ERROR_SYSTEM, "",
                  "the result of " + spec.function() + " is " + std::to_string(out.size()) +
                      " bytes, more than a message may hold (" +
                      std::to_string(rpc::kDefaultMaxFrameBytes) + " bytes)");
    }
    auto* ret = reply.add_returns();
    ret->set_object_id(ReturnObjectId(TaskId::FromBinary(spec.task_id()), 1).Binary());
    ret->set_data(std::move(out));
  } catch (const internal::ArgumentError& e) {
    return fail(rpc::ERROR_ARGUMENT, "", e.what());
  } catch (const std::exception& e) {
    return fail(rpc::ERROR_TASK, internal::Demangle(typeid(e).name()), e.what());
  } catch (...) {
    std::type_info* t = abi::__cxa_current_exception_type();
    return fail(rpc::ERROR_TASK, t != nullptr ? internal::Demangle(t->name()) : "unknown",
                "a non-standard exception was thrown");
  }
  return reply;
}

}  // namespace prism

#include "worker/task_executor.h"

namespace prism {

TaskExecutor::TaskExecutor(Execute execute) : execute_(std::move(execute)) {}

void TaskExecutor::Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Item{std::move(push), std::move(from)});
  }
  cv_.notify_one();  // every time: a threaded actor has several threads waiting
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
    ExecutedTask done = execute_(std::make_shared<const rpc::PushTask>(std::move(item.push)), item.from);
    if (done.deferred) continue;
    rpc::Envelope env;
    *env.mutable_task_reply() = std::move(done.reply);
    item.from->Send(env);
    done.hold.reset();  // after the reply: releases it triggers follow it on the connection
  }
}

}  // namespace prism

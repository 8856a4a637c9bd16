#include "worker/task_executor.h"

namespace prism {

TaskExecutor::TaskExecutor(Execute execute) : execute_(std::move(execute)) {}

TaskExecutor::~TaskExecutor() {
  Stop();
  Join();
}

void TaskExecutor::Enqueue(rpc::PushTask push, std::shared_ptr<rpc::Connection> from) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Item{std::move(push), std::move(from)});
  }
  cv_.notify_one();
  watch_cv_.notify_one();
}

void TaskExecutor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watch_cv_.notify_all();
}

void TaskExecutor::AllowThreads(int n, std::chrono::microseconds patience) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n <= max_threads_) return;
  max_threads_ = n;
  patience_ = patience;
  if (!watcher_.joinable()) watcher_ = std::thread([this] { Watch(); });
}

void TaskExecutor::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    bool waiting = !queue_.empty() && idle_ == 0 && threads_ < max_threads_;
    if (!waiting) {
      watch_cv_.wait(lock);
      continue;
    }
    watch_cv_.wait_for(lock, patience_);
    if (stop_ || queue_.empty() || idle_ > 0 || threads_ >= max_threads_) continue;
    auto now = std::chrono::steady_clock::now();
    bool all_long = true;
    for (const auto& [slot, since] : busy_since_) all_long &= now - since >= patience_;
    if (!all_long) continue;
    threads_++;  // counted now, so the next check sees it
    added_.emplace_back([this] { RunLoop(); });
  }
}

void TaskExecutor::Join() {
  if (watcher_.joinable() && watcher_.get_id() != std::this_thread::get_id()) watcher_.join();
  std::vector<std::thread> added;
  {
    std::lock_guard<std::mutex> lock(mu_);
    added.swap(added_);
  }
  for (auto& t : added) {
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  }
}

void TaskExecutor::Run() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads_++;
  }
  RunLoop();
}

void TaskExecutor::RunLoop() {
  int slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot = next_slot_++;
  }
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      busy_since_.erase(slot);
      idle_++;
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      idle_--;
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_since_[slot] = std::chrono::steady_clock::now();
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

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
    bool waiting = !queue_.empty() && threads_ > 0 && threads_ < max_threads_;
    if (!waiting) {
      watch_cv_.wait(lock);
      continue;
    }
    // Tasks wait, no thread is free or starting, and every running task has run `patience`
    // already: add a thread. Otherwise look again (wakeups come early too: each check is on
    // the clock, not on how long the wait lasted).
    auto now = std::chrono::steady_clock::now();
    bool stuck = idle_ == 0 && starting_ == 0 && !busy_since_.empty();
    for (const auto& [slot, since] : busy_since_) stuck &= now - since >= patience_;
    if (stuck) {
      threads_++;
      starting_++;
      added_.emplace_back([this] { RunLoop(/*added=*/true); });
      continue;
    }
    watch_cv_.wait_for(lock, patience_);
  }
}

int TaskExecutor::threads() {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_;
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
  RunLoop(/*added=*/false);
}

void TaskExecutor::RunLoop(bool added) {
  int slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot = next_slot_++;
    if (added) starting_--;
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
      if (!queue_.empty() && max_threads_ > 1) watch_cv_.notify_one();  // others wait behind this one
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

#include "node/disk_io.h"

#include <pthread.h>

#include "base/mutex.h"

namespace prism {

DiskIoThread::DiskIoThread(asio::io_context& loop) : loop_(loop) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "prism-disk");
    Loop();
  });
}

DiskIoThread::~DiskIoThread() { Stop(); }

void DiskIoThread::Run(std::function<void()> io, std::function<void()> then) {
  {
    MutexLock lock(mu_);
    jobs_.push_back(Job{std::move(io), std::move(then)});
  }
  cv_.notify_one();
}

void DiskIoThread::Stop(bool discard_queued) {
  {
    MutexLock lock(mu_);
    stop_ = true;
    if (discard_queued) jobs_.clear();
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void DiskIoThread::Loop() {
  UniqueLock lock(mu_);
  while (true) {
    cv_.wait(lock, [&]() PRISM_REQUIRES(mu_) { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and everything queued ran
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job.io();
    asio::post(loop_, std::move(job.then));
    lock.lock();
  }
}

}  // namespace prism

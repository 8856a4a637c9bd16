#include "worker/device_transfer.h"

#include <dlfcn.h>
#include <prism/errors.h>

#include <thread>

#include "base/logging.h"
#include "base/mutex.h"
#include "base/process_info.h"

namespace prism {
namespace {

thread_local bool tl_draining = false;  // this thread drains sends (DeviceMoves::DrainSends)

struct TransferLibrary {
  int (*move)(const char* group, int rank, int nccl, int device, int send, void* ptr,
              uint64_t bytes, void* stream, int64_t timeout_ms, char* error, size_t size) = nullptr;
  std::string error;
};

const TransferLibrary& TransferLib() {
  static TransferLibrary lib = [] {
    TransferLibrary l;
    Result<void*> h = OpenBesideLibprism("libprism_collective.so");
    if (!h.ok()) {
      l.error = "the collectives library, which moves it, is not available (" +
                h.status().message() + ")";
      return l;
    }
    l.move = reinterpret_cast<decltype(l.move)>(dlsym(*h, "prism_device_transfer"));
    if (l.move == nullptr) l.error = "libprism_collective.so lacks prism_device_transfer";
    return l;
  }();
  return lib;
}

}  // namespace

Status DeviceTransferAvailable() {
  const TransferLibrary& lib = TransferLib();
  return lib.move != nullptr ? Status::OK() : Status::Unavailable(lib.error);
}

Status TransferThroughPairGroup(const std::string& group, bool send, gpu::Backend& backend,
                                int device, void* ptr, uint64_t bytes, gpu::Stream* stream) {
  const TransferLibrary& lib = TransferLib();
  if (lib.move == nullptr) return Status::Unavailable(lib.error);
  char error[1024] = {};
  if (lib.move(group.c_str(), send ? 0 : 1, backend.name() != "sim", device, send ? 1 : 0, ptr,
               bytes, stream, std::chrono::milliseconds(kDeviceTransferTimeout).count(), error,
               sizeof error) != 0) {
    return Status::Unavailable(error);
  }
  return Status::OK();
}

DeviceMoves::DeviceMoves(std::function<Result<Source>(const std::string& id)> source,
                         std::function<void(const std::string& id, const WorkerId& importer)> sent)
    : source_(std::move(source)), sent_(std::move(sent)) {}

void DeviceMoves::QueueSend(const std::string& id, const WorkerId& importer,
                            const std::string& group) {
  MutexLock lock(mu_);
  bool idle = send_queues_.count(group) == 0;  // (a queue exists while its thread drains it)
  send_queues_[group].push_back({id, importer});
  if (idle) {
    ++senders_;
    std::thread([this, group] { DrainSends(group); }).detach();
  }
}

void DeviceMoves::WaitForSends() {
  // (A drain thread that ends up here, dropping the runtime's last reference, cannot wait for
  // itself.)
  if (tl_draining) return;
  UniqueLock lock(mu_);
  senders_cv_.wait(lock, [this]() PRISM_REQUIRES(mu_) { return senders_ == 0; });
}

void DeviceMoves::DrainSends(const std::string& group) {
  tl_draining = true;
  for (;;) {
    SendJob job;
    {
      MutexLock lock(mu_);
      auto& queue = send_queues_[group];
      if (queue.empty()) {
        send_queues_.erase(group);
        --senders_;
        senders_cv_.notify_all();
        return;
      }
      job = queue.front();
      queue.pop_front();
    }
    Status st = SendNow(job.id, group);
    if (!st.ok())
      PRISM_LOG_WARN("device object {}: sending it through {} failed: {}", job.id, group,
                     st.ToString());
    sent_(job.id, job.importer);
  }
}

Status DeviceMoves::SendNow(const std::string& id, const std::string& group) {
  PRISM_ASSIGN_OR_RETURN(Source src, source_(id));
  src.tensor.AddUser(*src.backend, *src.stream);  // its memory stays until the send is done
  PRISM_RETURN_IF_ERROR(TransferThroughPairGroup(group, /*send=*/true, *src.backend, src.device,
                                                 src.tensor.data(), src.tensor.bytes(),
                                                 src.stream));
  MutexLock lock(mu_);
  stats_.sent++;
  stats_.sent_bytes += src.tensor.bytes();
  return Status::OK();
}

void DeviceMoves::Receive(const internal::OwnerAddress& self,
                          const internal::OwnerAddress& producer, int64_t producer_pid,
                          const std::function<bool(const std::string& group)>& request,
                          gpu::Backend& backend, int device, gpu::Tensor& into, gpu::Stream* stream,
                          const std::string& what) {
  std::shared_ptr<Mutex> pair;
  std::string group;
  {
    MutexLock lock(mu_);
    auto& l = receive_locks_[producer.socket_path];
    if (!l) l = std::make_shared<Mutex>();
    pair = l;
  }
  MutexLock one_at_a_time(*pair);
  {
    MutexLock lock(mu_);
    auto hex = [](const std::string& binary) {
      return WorkerId::IsValidBinary(binary) ? WorkerId::FromBinary(binary).Hex().substr(0, 16)
                                             : std::string("x");
    };
    group = "prism.xfer." + hex(self.worker_id) + "." + hex(producer.worker_id) + "." +
            std::to_string(receive_epochs_[producer.socket_path]);
  }
  auto next_epoch = [&] {  // (the group is dropped on both sides, or never formed)
    MutexLock lock(mu_);
    ++receive_epochs_[producer.socket_path];
  };
  // The producer counts the import (so the object stays), answers, and queues its send.
  if (!request(group)) {
    // (A producer that answered late may still send through this group: the next move uses
    // another.)
    next_epoch();
    throw ObjectLostError(what + " is no longer held by its producer");
  }
  Status moved = TransferThroughPairGroup(group, /*send=*/false, backend, device, into.data(),
                                          into.bytes(), stream);
  if (!moved.ok()) {
    next_epoch();
    // A producer that died meanwhile took the object with it (lineage may make it again).
    if (producer_pid > 0 && ProcessGone(static_cast<pid_t>(producer_pid))) {
      throw ObjectLostError(what + ": its producer died while moving it (" + moved.message() + ")");
    }
    throw RuntimeError(what + ": moving it from its producer failed: " + moved.message());
  }
  MutexLock lock(mu_);
  stats_.received++;
  stats_.received_bytes += into.bytes();
}

DeviceMoves::Stats DeviceMoves::stats() {
  MutexLock lock(mu_);
  return stats_;
}

}  // namespace prism

// The nccl backend (libprism_collective_nccl.so, loaded by libprism_collective when a group asks
// for it, so nothing else needs NCCL or the CUDA runtime): CUDA device memory, every operation
// queued on the caller's stream with no host synchronization. A communicator forms non-blocking (so
// its init can time out), then operations go through a blocking one split from it; a watchdog
// thread aborts it (ncclCommAbort) when an operation is not done within the timeout or NCCL reports
// an asynchronous error, so a dead or stalled rank turns into CollectiveError.
#include <cuda_runtime.h>
#include <nccl.h>
#include <prism/gpu/context.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "collectives/internal.h"

namespace prism::collective::internal {
namespace {

ncclDataType_t ToNccl(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt32:
      return ncclInt32;
    case DType::kUInt8:
      return ncclUint8;
    default:
      return ncclInt64;
  }
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kProd:
      return ncclProd;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kAvg:
      return ncclAvg;
    default:
      return ncclSum;
  }
}

class NcclGroup final : public Group {
 public:
  NcclGroup(const JoinInfo& info, ncclComm_t comm, ncclComm_t parent, int device)
      : Group(info.name, info.rank, info.size, Backend::kNccl),
        info_(info),
        comm_(comm),
        parent_(parent),
        device_(device) {
    watchdog_ = std::thread([this] { Watch(); });
  }
  ~NcclGroup() override {
    {
      MutexLock lock(watch_mu_);
      stop_ = true;
    }
    watch_cv_.notify_all();
    watchdog_.join();
    for (auto& p : pending_) cudaEventDestroy(p.event);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    if (aborted_) {  // (an aborted communicator is freed by the abort)
      if (!parent_aborted_) ncclCommAbort(parent_);
      return;
    }
    ncclCommDestroy(comm_);
    if (!parent_aborted_) ncclCommDestroy(parent_);
    if (barrier_stream_) cudaStreamDestroy(barrier_stream_);
    if (barrier_buffer_) cudaFree(barrier_buffer_);
  }

  void AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                 gpu::Stream* stream) override {
    Run("allreduce", dtype, stream, [&](cudaStream_t s) {
      return ncclAllReduce(send, recv, count, ToNccl(dtype), ToNccl(op), comm_, s);
    });
  }
  void AllGather(const void* send, void* recv, size_t count, DType dtype,
                 gpu::Stream* stream) override {
    Run("allgather", dtype, stream,
        [&](cudaStream_t s) { return ncclAllGather(send, recv, count, ToNccl(dtype), comm_, s); });
  }
  void ReduceScatter(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                     gpu::Stream* stream) override {
    Run("reduce-scatter", dtype, stream, [&](cudaStream_t s) {
      return ncclReduceScatter(send, recv, count, ToNccl(dtype), ToNccl(op), comm_, s);
    });
  }
  void Broadcast(void* buffer, size_t count, DType dtype, int root, gpu::Stream* stream) override {
    CheckRank(root, "root");
    Run("broadcast", dtype, stream, [&](cudaStream_t s) {
      return ncclBroadcast(buffer, buffer, count, ToNccl(dtype), root, comm_, s);
    });
  }
  void Reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, int root,
              gpu::Stream* stream) override {
    CheckRank(root, "root");
    Run("reduce", dtype, stream, [&](cudaStream_t s) {
      return ncclReduce(send, recv, count, ToNccl(dtype), ToNccl(op), root, comm_, s);
    });
  }
  void Send(const void* buffer, size_t count, DType dtype, int peer, gpu::Stream* stream) override {
    CheckPeer(peer);
    Run("send", dtype, stream,
        [&](cudaStream_t s) { return ncclSend(buffer, count, ToNccl(dtype), peer, comm_, s); });
  }
  void Recv(void* buffer, size_t count, DType dtype, int peer, gpu::Stream* stream) override {
    CheckPeer(peer);
    Run("recv", dtype, stream,
        [&](cudaStream_t s) { return ncclRecv(buffer, count, ToNccl(dtype), peer, comm_, s); });
  }
  void SendRecv(const std::vector<P2POp>& ops, gpu::Stream* stream) override {
    for (const P2POp& op : ops) {
      CheckPeer(op.peer);
      CheckDType(op.dtype, false);
    }
    Run("sendrecv", DType::kUInt8, stream, [&](cudaStream_t s) {
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      for (const P2POp& op : ops) {
        ncclResult_t e = op.kind == P2POp::Kind::kSend
                             ? ncclSend(op.buffer, op.count, ToNccl(op.dtype), op.peer, comm_, s)
                             : ncclRecv(op.buffer, op.count, ToNccl(op.dtype), op.peer, comm_, s);
        if (r == ncclSuccess) r = e;
      }
      ncclResult_t end = ncclGroupEnd();
      return r != ncclSuccess ? r : end;
    });
  }

  void Barrier() override {
    // An allreduce of one element on a stream of the group's, waited for (within the timeout).
    {
      MutexLock lock(mu_);
      if (!barrier_stream_) {
        cudaSetDevice(device_);
        if (cudaStreamCreateWithFlags(&barrier_stream_, cudaStreamNonBlocking) != cudaSuccess ||
            cudaMalloc(&barrier_buffer_, sizeof(int32_t)) != cudaSuccess) {
          throw RuntimeError("collective group '" + name() + "': cannot set up its barrier");
        }
      }
    }
    RunOn("barrier", DType::kInt32, barrier_stream_, [&](cudaStream_t s) {
      return ncclAllReduce(barrier_buffer_, barrier_buffer_, 1, ncclInt32, ncclSum, comm_, s);
    });
    auto deadline = std::chrono::steady_clock::now() + info_.timeout;
    while (cudaStreamQuery(barrier_stream_) == cudaErrorNotReady) {
      if (broken() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (cudaStreamQuery(barrier_stream_) == cudaErrorNotReady && !broken()) {
      // Not done by its deadline, before the watchdog said so: the same verdict, now.
      {
        MutexLock w(watch_mu_);
        if (!aborted_) {
          aborted_ = true;
          ncclCommAbort(comm_);
        }
      }
      MutexLock lock(mu_);
      broken_ = Diagnose(info_, "barrier", "not done in time");
    }
    MutexLock lock(mu_);
    if (!broken_.empty()) Fail(broken_);
  }

  // A split of the parent communicator that did not finish in time: the parent is aborted (NCCL's
  // split job on it ends with it) and the group is broken.
  void Abandon(const std::string& why) {
    {
      MutexLock w(watch_mu_);
      if (!parent_aborted_) {
        parent_aborted_ = true;
        ncclCommAbort(parent_);
      }
    }
    MutexLock lock(mu_);
    if (broken_.empty()) broken_ = why;
  }

  ncclComm_t comm() const { return comm_; }
  ncclComm_t nonblocking() const { return parent_; }
  int device() const { return device_; }
  std::chrono::milliseconds timeout() const { return info_.timeout; }
  bool broken() const override {
    MutexLock lock(mu_);
    return !broken_.empty();
  }

 private:
  [[noreturn]] void Fail(const std::string& why) const {
    throw CollectiveError("collective group '" + name() + "' (rank " + std::to_string(rank()) +
                          " of " + std::to_string(size()) + "): " + why);
  }

  template <typename F>
  void Run(const char* op, DType dtype, gpu::Stream* stream, F call) {
    cudaStream_t s = nullptr;
    if (stream != nullptr) {
      s = static_cast<cudaStream_t>(stream->native());
    } else {
      // A GPU task's or actor's own stream; else the legacy default stream.
      gpu::Context* ctx = nullptr;
      try {
        ctx = &gpu::CurrentContext();
      } catch (const Error&) {
      }
      if (ctx != nullptr) s = static_cast<cudaStream_t>(ctx->stream().native());
    }
    RunOn(op, dtype, s, call);
  }

  template <typename F>
  void RunOn(const char* op, DType dtype, cudaStream_t s, F call) {
    CheckDType(dtype, Reduces(op));
    MutexLock lock(mu_);
    if (!broken_.empty())
      Fail(std::string("it is broken (") + broken_ + "): destroy it and create it again");
    ncclResult_t r = call(s);
    while (r == ncclInProgress) {  // a non-blocking communicator's enqueue still going
      if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
    }
    if (r != ncclSuccess) {
      broken_ =
          Diagnose(info_, op, std::string(ncclGetErrorString(r)) + ": " + ncclGetLastError(comm_));
      Fail(broken_);
    }
    uint64_t seq = IsCollective(op) ? ++collectives_ : 0;
    // The watchdog checks that it completes in time: an event after it.
    cudaEvent_t done = nullptr;
    {
      MutexLock w(watch_mu_);
      if (!free_events_.empty()) {
        done = free_events_.back();
        free_events_.pop_back();
      }
    }
    if (done == nullptr && cudaEventCreateWithFlags(&done, cudaEventDisableTiming) != cudaSuccess)
      return;
    cudaEventRecord(done, s);
    bool idle;
    {
      MutexLock w(watch_mu_);
      idle = pending_.empty();
      pending_.push_back({done, s, std::chrono::steady_clock::now() + info_.timeout, op, seq});
    }
    if (idle) watch_cv_.notify_one();  // (while some are pending it looks every 5 ms anyway)
  }

  void Watch() {
    UniqueLock lock(watch_mu_);
    while (!stop_) {
      watch_cv_.wait_for(lock, std::chrono::milliseconds(pending_.empty() ? 200 : 5));
      if (!pending_.empty()) {
        // Which operations are done, asked of CUDA outside the lock (callers queue meanwhile): on
        // one stream the newest event answers for all before it; else the oldest, in order.
        size_t n = pending_.size();
        Pending newest = pending_.back();
        bool one_stream = true;
        for (size_t i = 0; i < n && one_stream; ++i)
          one_stream = pending_[i].stream == newest.stream;
        std::vector<cudaEvent_t> oldest;
        for (size_t i = 0; i < n && i < 64; ++i) oldest.push_back(pending_[i].event);
        lock.unlock();
        size_t done = 0;
        if (one_stream && cudaEventQuery(newest.event) == cudaSuccess) {
          done = n;
        } else {
          while (done < oldest.size() && cudaEventQuery(oldest[done]) == cudaSuccess) ++done;
        }
        lock.lock();
        for (size_t i = 0; i < done; ++i) {
          free_events_.push_back(pending_.front().event);
          pending_.pop_front();
        }
      }
      ncclResult_t async = ncclSuccess;
      if (!aborted_) ncclCommGetAsyncError(comm_, &async);
      bool late = !pending_.empty() && std::chrono::steady_clock::now() > pending_.front().deadline;
      if ((late || (async != ncclSuccess && async != ncclInProgress)) && !aborted_) {
        std::string what = late ? std::string(pending_.front().op) : "an operation";
        uint64_t seq = late ? pending_.front().seq : 0;
        std::string why = late ? "not done in time" : std::string(ncclGetErrorString(async));
        aborted_ = true;
        lock.unlock();
        ncclCommAbort(comm_);  // its kernels end; what waits on them goes on
        {
          MutexLock l(mu_);
          broken_ = Diagnose(info_, what.c_str(), why, seq);
        }
        lock.lock();
      }
    }
  }

  struct Pending {
    cudaEvent_t event;
    cudaStream_t stream;
    std::chrono::steady_clock::time_point deadline;
    const char* op;
    uint64_t seq;  // its number among the group's collective operations (0: send/recv)
  };
  JoinInfo info_;
  ncclComm_t comm_;    // blocking: the operations'
  ncclComm_t parent_;  // non-blocking: the one the group formed as
  int device_;
  mutable Mutex mu_;  // one enqueue at a time; broken_
  std::string broken_;
  uint64_t collectives_ = 0;  // collective operations so far (the same count on every rank)
  cudaStream_t barrier_stream_ = nullptr;
  void* barrier_buffer_ = nullptr;
  Mutex watch_mu_;
  std::condition_variable watch_cv_;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  bool stop_ = false;
  bool aborted_ = false;
  bool parent_aborted_ = false;  // by Abandon
  std::thread watchdog_;
};

// Waits, until `deadline`, for a split of the non-blocking communicator `parent` (whose call
// returned `r`) to finish: with `expect_child`, until *child is ready too. On failure aborts
// what formed (the parent too when `abort_parent`) and says why in `error`.
bool WaitSplit(ncclComm_t parent, ncclResult_t r, ncclComm_t* child, bool expect_child,
               std::chrono::steady_clock::time_point deadline, char* error, size_t size,
               bool abort_parent = false) {
  while (r == ncclInProgress || r == ncclSuccess) {
    // (With a non-blocking parent the split goes on in the background: the parent says when it
    // is done, and the new communicator whether it is ready.)
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(parent, &state);
    if (state == ncclSuccess && *child != nullptr) ncclCommGetAsyncError(*child, &state);
    bool waiting_for_child = expect_child && state == ncclSuccess && *child == nullptr;
    if (state != ncclInProgress && !waiting_for_child) {
      r = state;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      if (*child != nullptr) ncclCommAbort(*child);
      if (abort_parent) ncclCommAbort(parent);
      std::snprintf(error, size, "the nccl communicator did not form in time");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (r != ncclSuccess || (expect_child && *child == nullptr)) {
    std::snprintf(error, size, "ncclCommSplit: %s", ncclGetErrorString(r));
    if (*child != nullptr) ncclCommAbort(*child);
    if (abort_parent) ncclCommAbort(parent);
    return false;
  }
  return true;
}

// A group from the non-blocking communicator `comm` (formed): operations go through a blocking
// communicator split from it (every rank does the same), as on a non-blocking one each call
// would have to poll until it is enqueued. 0 on success (else `comm` is aborted).
int Form(const JoinInfo& info, ncclComm_t comm, int device,
         std::chrono::steady_clock::time_point deadline, Group** out, char* error, size_t size) {
  ncclConfig_t blocking = NCCL_CONFIG_INITIALIZER;
  blocking.blocking = 1;
  ncclComm_t ops = nullptr;
  ncclResult_t r = ncclCommSplit(comm, 0, info.rank, &ops, &blocking);
  if (!WaitSplit(comm, r, &ops, true, deadline, error, size, /*abort_parent=*/true)) return 1;
  *out = new NcclGroup(info, ops, comm, device);
  return 0;
}

}  // namespace
}  // namespace prism::collective::internal

using prism::collective::internal::JoinInfo;

// A new unique id (128 bytes) for rank 0 to publish. 0 on success.
extern "C" __attribute__((visibility("default"))) int prism_nccl_unique_id(char* out, char* error,
                                                                           size_t size) {
  ncclUniqueId id;
  ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    std::snprintf(error, size, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    return 1;
  }
  std::memcpy(out, id.internal, NCCL_UNIQUE_ID_BYTES);
  return 0;
}

// Joins the communicator of `id` as info's rank on this process's device 0 (its GPU), waiting
// for the non-blocking init within the timeout. 0 on success.
extern "C" __attribute__((visibility("default"))) int prism_nccl_join(
    const JoinInfo* info, const char* id_bytes, prism::collective::Group** out, char* error,
    size_t size) {
  int device = info->device;
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    std::snprintf(error, size, "this process has no CUDA device for nccl");
    return 1;
  }
  ncclUniqueId id;
  std::memcpy(id.internal, id_bytes, NCCL_UNIQUE_ID_BYTES);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, info->size, id, info->rank, &config);
  auto deadline = std::chrono::steady_clock::now() + info->timeout;
  while (r == ncclInProgress || r == ncclSuccess) {
    ncclResult_t state = ncclSuccess;
    if (comm == nullptr) break;
    ncclCommGetAsyncError(comm, &state);
    if (state != ncclInProgress) {
      r = state;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(comm);
      std::snprintf(error, size, "the nccl communicator did not form within %lld ms",
                    static_cast<long long>(info->timeout.count()));
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (r != ncclSuccess) {
    std::snprintf(error, size, "ncclCommInitRankConfig: %s", ncclGetErrorString(r));
    if (comm != nullptr) ncclCommAbort(comm);
    return 1;
  }
  return prism::collective::internal::Form(*info, comm, device, deadline, out, error, size);
}

// Takes part in splitting `parent` (an nccl group): `info` is this rank's subgroup (null, and
// `color` kNoColor, for a rank in none), its rank the order every rank computed. 0 on success.
extern "C" __attribute__((visibility("default"))) int prism_nccl_split(
    prism::collective::Group* parent, const JoinInfo* info, int color,
    prism::collective::Group** out, char* error, size_t size) {
  using namespace prism::collective::internal;
  auto* p = dynamic_cast<NcclGroup*>(parent);
  *out = nullptr;
  if (p == nullptr) {
    std::snprintf(error, size, "not an nccl group");
    return 1;
  }
  cudaSetDevice(p->device());
  auto deadline = std::chrono::steady_clock::now() + p->timeout();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  // (NCCL's split job writes the new communicator here when it is done, maybe after a timeout:
  // then the slot is left to it.)
  auto* child = new ncclComm_t(nullptr);
  ncclResult_t r = ncclCommSplit(p->nonblocking(), color < 0 ? NCCL_SPLIT_NOCOLOR : color,
                                 info != nullptr ? info->rank : 0, child, &config);
  if (!WaitSplit(p->nonblocking(), r, child, color >= 0, deadline, error, size)) {
    p->Abandon(std::string("a split did not complete: ") + error);
    return 1;
  }
  ncclComm_t formed = *child;
  delete child;
  if (info == nullptr) return 0;
  return Form(*info, formed, p->device(), deadline, out, error, size);
}

// The communicator of an nccl group (for the benchmark's raw NCCL calls on the same buffers);
// null for groups of other backends.
extern "C" __attribute__((visibility("default"))) void* prism_nccl_comm(
    prism::collective::Group* group) {
  auto* g = dynamic_cast<prism::collective::internal::NcclGroup*>(group);
  return g != nullptr ? static_cast<void*>(g->comm()) : nullptr;
}

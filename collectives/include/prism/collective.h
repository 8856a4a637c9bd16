// Collectives: communicator groups over actors (allreduce, allgather, reduce-scatter, broadcast,
// reduce, send/recv, barrier), with the control store as the rendezvous, so no rank needs another's
// address. Backends: gloo (host memory, and sim device memory, which is host memory) and nccl
// (CUDA device memory, on the caller's stream).
//
//   // Driver: actors[i] becomes rank i of group "g".
//   prism::collective::CreateGroup(actors, prism::collective::Backend::kGloo, "g");
//   // Inside each actor (its first use joins the group):
//   auto& g = prism::collective::GetGroup("g");
//   g.AllReduce(grad.data(), grad.data(), grad.size(), DType::kFloat32, ReduceOp::kSum);
//
// Every operation has a timeout (GroupOptions::timeout): a rank that never joins, dies or stalls
// makes the others fail with CollectiveError naming the group and the rank, never a hang. A group
// that failed is broken on each rank; DestroyGroup and create it again.
#pragma once

#include <prism/errors.h>
#include <prism/gpu/backend.h>
#include <prism/ids.h>
#include <prism/prism.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace prism::collective {

using gpu::DType;

enum class Backend { kGloo, kNccl };
enum class ReduceOp { kSum, kProd, kMin, kMax, kAvg };

const char* BackendName(Backend backend);

/// A collective failed: a rank never joined, died or did not take part in time, or the group is
/// broken by an earlier failure. The message names the group and the rank(s).
class CollectiveError : public Error {
 public:
  using Error::Error;
};

/// How CreateGroup's actors become ranks: actors[i] is rank i, or the ranks follow the node's
/// GPU topology (a ring whose neighbours are NVLink or PCIe-switch peers, for ring algorithms;
/// actors[0] stays rank 0). kTopology needs each actor to hold a GPU of its own; otherwise, or
/// where no topology is known, the given order stands.
enum class RankOrder { kAsGiven, kTopology };

struct GroupOptions {
  /// For the rendezvous and for every operation.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  /// CreateGroup only (InitGroup's ranks are the callers').
  RankOrder order = RankOrder::kAsGiven;
};

/// One send or receive of a batch (Group::SendRecv).
struct P2POp {
  enum class Kind { kSend, kRecv };
  Kind kind = Kind::kSend;
  void* buffer = nullptr;  // read by a send, written by a receive
  size_t count = 0;
  DType dtype = DType::kFloat32;
  int peer = 0;

  static P2POp Send(const void* buffer, size_t count, DType dtype, int peer) {
    return {Kind::kSend, const_cast<void*>(buffer), count, dtype, peer};
  }
  static P2POp Recv(void* buffer, size_t count, DType dtype, int peer) {
    return {Kind::kRecv, buffer, count, dtype, peer};
  }
};

/// One rank's membership of a group. Operations block the calling thread until they are done on
/// this rank (gloo), or are queued on `stream` (nccl: device memory, no host sync). Buffers are
/// host memory, or device memory of the backend's kind with `stream` its stream. Counts are
/// elements of `dtype` (float16, bfloat16, float32, float64, int32, int64).
class Group {
 public:
  virtual ~Group() = default;
  const std::string& name() const { return name_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  Backend backend() const { return backend_; }

  /// recv[i] = op over ranks of send[i]; send may equal recv (in place).
  virtual void AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                         gpu::Stream* stream = nullptr) = 0;
  /// recv (size() * count elements) = every rank's send, in rank order.
  virtual void AllGather(const void* send, void* recv, size_t count, DType dtype,
                         gpu::Stream* stream = nullptr) = 0;
  /// send holds size() * count elements; recv (count) = op over ranks of this rank's block.
  virtual void ReduceScatter(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                             gpu::Stream* stream = nullptr) = 0;
  /// buffer = root's buffer, on every rank.
  virtual void Broadcast(void* buffer, size_t count, DType dtype, int root,
                         gpu::Stream* stream = nullptr) = 0;
  /// On root: recv = op over ranks of send (recv is not touched elsewhere).
  virtual void Reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                      int root, gpu::Stream* stream = nullptr) = 0;
  virtual void Send(const void* buffer, size_t count, DType dtype, int peer,
                    gpu::Stream* stream = nullptr) = 0;
  virtual void Recv(void* buffer, size_t count, DType dtype, int peer,
                    gpu::Stream* stream = nullptr) = 0;
  /// Sends and receives issued together and done together (nccl: one ncclGroupStart/End; like
  /// torch's batch_isend_irecv), so exchanges in which every rank sends first cannot deadlock.
  /// Messages between a pair match in order, batched or not.
  virtual void SendRecv(const std::vector<P2POp>& ops, gpu::Stream* stream = nullptr) = 0;
  /// Returns once every rank called it.
  virtual void Barrier() = 0;
  /// Whether a failure broke it (every operation then throws CollectiveError until it is
  /// destroyed and created again; GetGroup then joins the new one).
  virtual bool broken() const = 0;

 protected:
  Group(std::string name, int rank, int size, Backend backend)
      : name_(std::move(name)), rank_(rank), size_(size), backend_(backend) {}
  /// Throws InvalidArgumentError for a rank (a root, a peer) outside the group.
  void CheckRank(int r, const char* what) const {
    if (r < 0 || r >= size_) {
      throw InvalidArgumentError("collective group '" + name_ + "': " + what + " " +
                                 std::to_string(r) + " is not a rank of its " +
                                 std::to_string(size_));
    }
  }
  void CheckPeer(int peer) const {
    CheckRank(peer, "peer");
    if (peer == rank_)
      throw InvalidArgumentError("collective group '" + name_ + "': a rank cannot send to itself");
  }

 private:
  std::string name_;
  int rank_, size_;
  Backend backend_;
};

namespace internal {
void DeclareGroup(const std::vector<ActorId>& members, Backend backend, const std::string& name,
                  const GroupOptions& options);
}  // namespace internal

/// Declares group `name` (from the driver, or any process): actors[i] is rank i. Each actor joins
/// when it first calls GetGroup(name). Throws InvalidArgumentError for a name in use or bad input.
template <typename T>
void CreateGroup(const std::vector<ActorHandle<T>>& actors, Backend backend,
                 const std::string& name, GroupOptions options = {}) {
  std::vector<ActorId> members;
  for (const auto& a : actors) members.push_back(a.id());
  internal::DeclareGroup(members, backend, name, options);
}

/// This process's membership of group `name`, joining it on first use: the process is one of
/// the actors CreateGroup named (or called InitGroup). Joining sets RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR and MASTER_PORT in the process's environment (torch.distributed's env://).
/// Throws InvalidArgumentError for an unknown group or a process not in it, CollectiveError when
/// the other ranks do not all join within the timeout.
Group& GetGroup(const std::string& name);

/// Joins group `name` as `rank` of `world_size`, torch.distributed-style: every rank calls it
/// (from actors or tasks), with the same size and backend.
Group& InitGroup(const std::string& name, int world_size, int rank, Backend backend,
                 GroupOptions options = {});

/// `color` for a rank that joins no subgroup in SplitGroup.
inline constexpr int kNoColor = -1;

/// Splits group `parent` as ncclCommSplit (and MPI_Comm_split) does: every rank of `parent` calls
/// it, in the same order among the group's other collectives; the ranks passing the same `color`
/// (>= 0) form a subgroup, ranked by `key`, then by their rank in `parent`. This process's
/// subgroup is registered as `name` (GetGroup(name) returns it; different colors may use the same
/// name, as each process holds its own); a rank passing kNoColor joins none and gets null. nccl
/// subgroups are split from the parent's communicator; gloo ones connect their ranks anew. Throws
/// InvalidArgumentError for a name in use here or an unknown parent, CollectiveError when a rank
/// of `parent` does not come within its timeout (named).
Group* SplitGroup(const std::string& parent, const std::string& name, int color, int key = 0);

/// Leaves group `name` here (if this process is in it) and removes its declaration, so the name can
/// be created again (after a failure: every rank destroys it, then it is created anew).
void DestroyGroup(const std::string& name);

/// Whether this process is a member of group `name` now.
bool InGroup(const std::string& name);

}  // namespace prism::collective

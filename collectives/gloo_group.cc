// The gloo backend: host memory (and sim device memory, which is host memory), gloo's TCP
// transport on loopback, its rendezvous through prism's control store.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <prism/gpu/float16.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "base/mutex.h"
#include "collectives/internal.h"
#include "runtime/process_runtime.h"

namespace prism::collective::internal {

namespace {

// Gloo's key-value store on prism's control store: a generation's keys under its prefix.
class ControlStore final : public gloo::rendezvous::Store {
 public:
  ControlStore(std::string prefix, std::chrono::milliseconds timeout)
      : prefix_(std::move(prefix)), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    KvSet(prefix_ + key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    wait({key});
    auto v = KvGet(prefix_ + key);
    if (!v) throw std::runtime_error("rendezvous key " + key + " vanished");
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    if (!KvWait(full, timeout))
      throw std::runtime_error("timed out waiting for the other ranks' addresses");
  }

 private:
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

// ---- element-wise reductions, per dtype and op ----

// One function per (dtype, op), the op a template argument, so each loop is a plain (vectorized)
// loop of one operation.
template <ReduceOp kOp, typename T>
T Apply(T a, T b) {
  if constexpr (kOp == ReduceOp::kProd) {
    return a * b;
  } else if constexpr (kOp == ReduceOp::kMin) {
    return std::min(a, b);
  } else if constexpr (kOp == ReduceOp::kMax) {
    return std::max(a, b);
  } else {
    return a + b;  // sum, and avg before its division
  }
}

template <typename T, ReduceOp kOp>
void ReduceNative(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(out);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = Apply<kOp>(x[i], y[i]);
}

template <float (*ToFloat)(uint16_t), uint16_t (*FromFloat)(float), ReduceOp kOp>
void ReduceHalf(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<uint16_t*>(out);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = FromFloat(Apply<kOp>(ToFloat(x[i]), ToFloat(y[i])));
}

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

template <ReduceOp kOp>
ReduceFn ReduceFor(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return ReduceHalf<gpu::HalfToFloat, gpu::FloatToHalf, kOp>;
    case DType::kBFloat16:
      return ReduceHalf<gpu::BFloat16ToFloat, gpu::FloatToBFloat16, kOp>;
    case DType::kFloat32:
      return ReduceNative<float, kOp>;
    case DType::kFloat64:
      return ReduceNative<double, kOp>;
    case DType::kInt32:
      return ReduceNative<int32_t, kOp>;
    default:
      return ReduceNative<int64_t, kOp>;
  }
}

ReduceFn ReduceFunction(DType dtype, ReduceOp op) {
  switch (op) {
    case ReduceOp::kProd:
      return ReduceFor<ReduceOp::kProd>(dtype);
    case ReduceOp::kMin:
      return ReduceFor<ReduceOp::kMin>(dtype);
    case ReduceOp::kMax:
      return ReduceFor<ReduceOp::kMax>(dtype);
    default:
      return ReduceFor<ReduceOp::kSum>(dtype);
  }
}

// Avg: the sum divided by the group's size, in place (integers round toward zero).
void DivideInPlace(void* data, size_t n, DType dtype, int size) {
  auto each = [&](auto* p, auto convert_in, auto convert_out) {
    for (size_t i = 0; i < n; ++i) p[i] = convert_out(convert_in(p[i]) / size);
  };
  auto id = [](auto v) { return v; };
  switch (dtype) {
    case DType::kFloat16:
      each(static_cast<uint16_t*>(data), gpu::HalfToFloat, gpu::FloatToHalf);
      break;
    case DType::kBFloat16:
      each(static_cast<uint16_t*>(data), gpu::BFloat16ToFloat, gpu::FloatToBFloat16);
      break;
    case DType::kFloat32:
      each(static_cast<float*>(data), id, id);
      break;
    case DType::kFloat64:
      each(static_cast<double*>(data), id, id);
      break;
    case DType::kInt32:
      each(static_cast<int32_t*>(data), id, id);
      break;
    default:
      each(static_cast<int64_t*>(data), id, id);
      break;
  }
}

// Gloo's options take typed pointers only for the element size: a carrier type of that size.
template <typename F>
void WithCarrier(DType dtype, F f) {
  switch (ElementSize(dtype)) {
    case 1:
      f(uint8_t{});
      break;
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    default:
      f(uint64_t{});
      break;
  }
}

class GlooGroup final : public Group {
 public:
  GlooGroup(const JoinInfo& info, std::shared_ptr<gloo::rendezvous::Context> context)
      : Group(info.name, info.rank, info.size, Backend::kGloo),
        info_(info),
        context_(std::move(context)),
        timeout_(info.timeout) {}

  void AllReduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                 gpu::Stream* stream) override {
    Run("allreduce", dtype, stream, [&] {
      if (count == 0) return;
      WithCarrier(dtype, [&](auto carrier) {
        using T = decltype(carrier);
        gloo::AllreduceOptions opts(context_);
        if (send != recv) opts.setInput(const_cast<T*>(static_cast<const T*>(send)), count);
        opts.setOutput(static_cast<T*>(recv), count);
        opts.setReduceFunction(ReduceFunction(dtype, op));
        opts.setTag(NextTag());
        opts.setTimeout(timeout_);
        gloo::allreduce(opts);
      });
      if (op == ReduceOp::kAvg) DivideInPlace(recv, count, dtype, size());
    });
  }

  void AllGather(const void* send, void* recv, size_t count, DType dtype,
                 gpu::Stream* stream) override {
    Run("allgather", dtype, stream, [&] {
      if (count == 0) return;
      WithCarrier(dtype, [&](auto carrier) {
        using T = decltype(carrier);
        gloo::AllgatherOptions opts(context_);
        opts.setInput(const_cast<T*>(static_cast<const T*>(send)), count);
        opts.setOutput(static_cast<T*>(recv), count * static_cast<size_t>(size()));
        opts.setTag(NextTag());
        opts.setTimeout(timeout_);
        gloo::allgather(opts);
      });
    });
  }

  void ReduceScatter(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                     gpu::Stream* stream) override {
    // An allreduce of the whole buffer, of which this rank keeps its block (gloo 0.5 has no
    // reduce-scatter of its own): twice the bytes of a ring reduce-scatter.
    CheckDType(dtype);
    HostReady(stream);  // (read here, before the allreduce)
    size_t bytes = count * ElementSize(dtype);
    std::vector<uint8_t> all(bytes * static_cast<size_t>(size()));
    if (bytes > 0) std::memcpy(all.data(), send, all.size());
    AllReduce(all.data(), all.data(), count * static_cast<size_t>(size()), dtype, op, nullptr);
    if (bytes > 0) std::memcpy(recv, all.data() + bytes * static_cast<size_t>(rank()), bytes);
  }

  void Broadcast(void* buffer, size_t count, DType dtype, int root, gpu::Stream* stream) override {
    CheckRank(root, "root");
    Run("broadcast", dtype, stream, [&] {
      if (count == 0) return;
      WithCarrier(dtype, [&](auto carrier) {
        using T = decltype(carrier);
        gloo::BroadcastOptions opts(context_);
        opts.setOutput(static_cast<T*>(buffer), count);
        opts.setRoot(root);
        opts.setTag(NextTag());
        opts.setTimeout(timeout_);
        gloo::broadcast(opts);
      });
    });
  }

  void Reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op, int root,
              gpu::Stream* stream) override {
    CheckRank(root, "root");
    Run("reduce", dtype, stream, [&] {
      if (count == 0) return;
      std::vector<uint8_t> scratch, input;
      void* out = recv;
      if (send == recv) {  // in place: gloo reads its input while it writes the output
        input.assign(static_cast<const uint8_t*>(send),
                     static_cast<const uint8_t*>(send) + count * ElementSize(dtype));
        send = input.data();
      }
      if (rank() != root || out == nullptr) {  // gloo wants an output everywhere
        scratch.resize(count * ElementSize(dtype));
        out = scratch.data();
      }
      WithCarrier(dtype, [&](auto carrier) {
        using T = decltype(carrier);
        gloo::ReduceOptions opts(context_);
        opts.setInput(const_cast<T*>(static_cast<const T*>(send)), count);
        opts.setOutput(static_cast<T*>(out), count);
        opts.setRoot(root);
        opts.setReduceFunction(ReduceFunction(dtype, op));
        opts.setTag(NextTag());
        opts.setTimeout(timeout_);
        gloo::reduce(opts);
      });
      if (op == ReduceOp::kAvg && rank() == root) DivideInPlace(out, count, dtype, size());
    });
  }

  void Send(const void* buffer, size_t count, DType dtype, int peer, gpu::Stream* stream) override {
    CheckPeer(peer);
    Run("send", dtype, stream, [&] {
      auto buf =
          context_->createUnboundBuffer(const_cast<void*>(buffer), count * ElementSize(dtype));
      buf->send(peer, PairSlot(sends_, peer));
      if (!buf->waitSend(timeout_)) throw std::runtime_error("the send was aborted");
    });
  }

  void Recv(void* buffer, size_t count, DType dtype, int peer, gpu::Stream* stream) override {
    CheckPeer(peer);
    Run("recv", dtype, stream, [&] {
      auto buf = context_->createUnboundBuffer(buffer, count * ElementSize(dtype));
      buf->recv(peer, PairSlot(recvs_, peer));
      if (!buf->waitRecv(timeout_)) throw std::runtime_error("the receive was aborted");
    });
  }

  void SendRecv(const std::vector<P2POp>& ops, gpu::Stream* stream) override {
    for (const P2POp& op : ops) {
      CheckPeer(op.peer);
      CheckDType(op.dtype, false);
    }
    Run("sendrecv", DType::kUInt8, stream, [&] {
      std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> posted;
      for (const P2POp& op : ops) {  // all posted first, then waited for
        auto buf = context_->createUnboundBuffer(op.buffer, op.count * ElementSize(op.dtype));
        if (op.kind == P2POp::Kind::kSend) {
          buf->send(op.peer, PairSlot(sends_, op.peer));
        } else {
          buf->recv(op.peer, PairSlot(recvs_, op.peer));
        }
        posted.push_back(std::move(buf));
      }
      for (size_t i = 0; i < ops.size(); ++i) {
        bool done = ops[i].kind == P2POp::Kind::kSend ? posted[i]->waitSend(timeout_)
                                                      : posted[i]->waitRecv(timeout_);
        if (!done) throw std::runtime_error("a send or receive of the batch was aborted");
      }
    });
  }

  const std::shared_ptr<gloo::rendezvous::Context>& context() const { return context_; }
  bool broken() const override {
    MutexLock lock(mu_);
    return !broken_.empty();
  }

  void Barrier() override {
    Run("barrier", DType::kFloat32, nullptr, [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

 private:
  uint32_t NextTag() { return next_tag_++; }
  // Point-to-point messages between a pair match in order: the n-th send from a to b is the
  // n-th receive at b from a (NCCL's rule).
  uint64_t PairSlot(std::map<int, uint64_t>& counts, int peer) {
    return (uint64_t{0x7e} << 56) | (counts[peer]++ & ((uint64_t{1} << 56) - 1));
  }

  // Device memory on `stream` (sim's, which is host memory) may be read and written here once
  // the stream's work is done; CUDA device memory is refused.
  void HostReady(gpu::Stream* stream) const {
    if (stream == nullptr) return;
    auto backend = CurrentRuntime()->GpuBackend();
    if (!backend.ok() || (*backend)->name() != "sim") {
      throw InvalidArgumentError("collective group '" + name() +
                                 "': gloo takes host memory (and sim device memory); CUDA device "
                                 "memory goes through nccl");
    }
    Status st = stream->Synchronize();
    if (!st.ok()) throw RuntimeError("collective group '" + name() + "': " + st.ToString());
  }

  // Runs one operation: arguments checked, device memory ordered, a failure turned into a
  // CollectiveError naming the group and the ranks at fault; a failed group stays broken.
  template <typename F>
  void Run(const char* op, DType dtype, gpu::Stream* stream, F body) {
    CheckDType(dtype, Reduces(op));
    MutexLock lock(mu_);  // one operation at a time per rank (gloo's context)
    if (!broken_.empty()) {
      throw CollectiveError("collective group '" + name() + "' is broken (" + broken_ +
                            "): destroy it and create it again");
    }
    HostReady(stream);
    uint64_t seq = IsCollective(op) ? ++collectives_ : 0;
    try {
      body();
    } catch (const std::exception& e) {
      broken_ = internal::Diagnose(info_, op, e.what(), seq);
      throw CollectiveError("collective group '" + name() + "' (rank " + std::to_string(rank()) +
                            " of " + std::to_string(size()) + "): " + broken_);
    }
  }

  JoinInfo info_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::chrono::milliseconds timeout_;
  mutable Mutex mu_;
  std::string broken_;
  uint32_t next_tag_ = 1;
  uint64_t collectives_ = 0;  // collective operations so far (the same count on every rank)
  std::map<int, uint64_t> sends_, recvs_;
};

}  // namespace

std::shared_ptr<gloo::Context> GlooContextOf(Group& group) {
  auto* g = dynamic_cast<GlooGroup*>(&group);
  return g != nullptr ? g->context() : nullptr;
}

std::unique_ptr<Group> JoinGloo(const JoinInfo& info) {
  try {
    gloo::transport::tcp::attr attr("127.0.0.1");
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(info.rank, info.size);
    context->setTimeout(info.timeout);
    ControlStore store(info.prefix() + "gloo/", info.timeout);
    context->connectFullMesh(store, device);
    return std::make_unique<GlooGroup>(info, std::move(context));
  } catch (const std::exception& e) {
    throw CollectiveError("collective group '" + info.name + "' (rank " +
                          std::to_string(info.rank) + " of " + std::to_string(info.size) +
                          "): cannot connect to the other ranks: " + e.what());
  }
}

}  // namespace prism::collective::internal

#include "gpu/counting_backend.h"

#include <map>
#include <mutex>

#include "base/mutex.h"

namespace prism::gpu {
namespace {

struct Counters {
  std::atomic<uint64_t> host_syncs{0}, host_copies{0}, device_copies{0}, kernels{0};
};

class CountingEvent;

class CountingStream final : public Stream {
 public:
  CountingStream(std::unique_ptr<Stream> inner, Backend& backend, Counters& c)
      : inner_(std::move(inner)), backend_(backend), c_(c) {}
  int device() const override { return inner_->device(); }
  const std::string& name() const override { return inner_->name(); }
  Status Wait(Event& event) override;
  Status Synchronize() override {
    c_.host_syncs++;
    return inner_->Synchronize();
  }
  Result<bool> Query() override { return inner_->Query(); }
  Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    bool host = backend_.PointerDevice(dst) < 0 || backend_.PointerDevice(src) < 0;
    (host ? c_.host_copies : c_.device_copies)++;
    return inner_->CopyAsync(dst, src, bytes);
  }
  Status MemsetAsync(void* dst, int value, size_t bytes) override {
    c_.kernels++;
    return inner_->MemsetAsync(dst, value, bytes);
  }
  void* native() override { return inner_->native(); }
  Stream& inner() { return *inner_; }

 private:
  std::unique_ptr<Stream> inner_;
  Backend& backend_;
  Counters& c_;
};

Stream& Unwrap(Stream& s) {
  auto* c = dynamic_cast<CountingStream*>(&s);
  return c ? c->inner() : s;
}

class CountingEvent final : public Event {
 public:
  CountingEvent(std::unique_ptr<Event> inner, Counters& c) : inner_(std::move(inner)), c_(c) {}
  int device() const override { return inner_->device(); }
  Status Record(Stream& stream) override { return inner_->Record(Unwrap(stream)); }
  Result<bool> Query() override { return inner_->Query(); }
  Status Synchronize() override {
    c_.host_syncs++;
    return inner_->Synchronize();
  }
  Result<double> ElapsedSince(Event& start) override {
    auto* s = dynamic_cast<CountingEvent*>(&start);
    return inner_->ElapsedSince(s ? *s->inner_ : start);
  }
  Result<IpcEventHandle> Export() override { return inner_->Export(); }
  Event& inner() { return *inner_; }

 private:
  std::unique_ptr<Event> inner_;
  Counters& c_;
};

Status CountingStream::Wait(Event& event) {
  auto* e = dynamic_cast<CountingEvent*>(&event);
  return inner_->Wait(e ? e->inner() : event);
}

class CountingMemory final : public MemoryResource {
 public:
  explicit CountingMemory(MemoryResource& inner) : inner_(inner) {}
  int device() const override { return inner_.device(); }
  Result<void*> Allocate(size_t bytes, Stream& stream) override {
    return inner_.Allocate(bytes, Unwrap(stream));
  }
  Status Deallocate(void* ptr, size_t bytes, Stream& stream) override {
    return inner_.Deallocate(ptr, bytes, Unwrap(stream));
  }
  uint64_t bytes_in_use() const override { return inner_.bytes_in_use(); }
  std::optional<uint64_t> limit() const override { return inner_.limit(); }
  void set_limit(std::optional<uint64_t> limit) override { inner_.set_limit(limit); }
  Result<IpcHandle> Export(void* ptr, size_t bytes) override { return inner_.Export(ptr, bytes); }
  bool Owns(const void* ptr, size_t bytes) const override { return inner_.Owns(ptr, bytes); }

 private:
  MemoryResource& inner_;
};

class CountingKernels final : public Kernels {
 public:
  CountingKernels(Kernels& inner, Counters& c) : inner_(inner), c_(c) {}
  Status Fill(Stream& s, DType t, void* x, size_t n, double v) override {
    c_.kernels++;
    return inner_.Fill(Unwrap(s), t, x, n, v);
  }
  Status Axpy(Stream& s, DType t, size_t n, double a, const void* x, void* y) override {
    c_.kernels++;
    return inner_.Axpy(Unwrap(s), t, n, a, x, y);
  }
  Status Reduce(Stream& s, DType t, ReduceOp op, const void* x, size_t n, void* out) override {
    c_.kernels++;
    return inner_.Reduce(Unwrap(s), t, op, x, n, out);
  }
  Status Gemm(Stream& s, DType t, size_t m, size_t n, size_t k, double alpha, const void* a,
              const void* b, double beta, void* c) override {
    c_.kernels++;
    return inner_.Gemm(Unwrap(s), t, m, n, k, alpha, a, b, beta, c);
  }
  Status Trap(Stream& s) override { return inner_.Trap(Unwrap(s)); }

 private:
  Kernels& inner_;
  Counters& c_;
};

class CountingBackend final : public Backend {
 public:
  explicit CountingBackend(std::unique_ptr<Backend> inner)
      : inner_(std::move(inner)), kernels_(inner_->kernels(), c_) {}
  std::string_view name() const override { return inner_->name(); }
  int device_count() const override { return inner_->device_count(); }
  Result<DeviceInfo> device(int ordinal) const override { return inner_->device(ordinal); }
  Result<std::unique_ptr<Stream>> CreateStream(int device, std::string name) override {
    PRISM_ASSIGN_OR_RETURN(auto s, inner_->CreateStream(device, std::move(name)));
    return std::unique_ptr<Stream>(new CountingStream(std::move(s), *inner_, c_));
  }
  Result<std::unique_ptr<Stream>> WrapStream(int device, uintptr_t handle) override {
    PRISM_ASSIGN_OR_RETURN(auto s, inner_->WrapStream(device, handle));
    return std::unique_ptr<Stream>(new CountingStream(std::move(s), *inner_, c_));
  }
  Result<std::unique_ptr<Event>> CreateEvent(int device, bool timing) override {
    PRISM_ASSIGN_OR_RETURN(auto e, inner_->CreateEvent(device, timing));
    return std::unique_ptr<Event>(new CountingEvent(std::move(e), c_));
  }
  Result<std::unique_ptr<Event>> CreateIpcEvent(int device) override {
    PRISM_ASSIGN_OR_RETURN(auto e, inner_->CreateIpcEvent(device));
    return std::unique_ptr<Event>(new CountingEvent(std::move(e), c_));
  }
  Result<std::unique_ptr<Event>> OpenIpcEvent(const IpcEventHandle& handle) override {
    PRISM_ASSIGN_OR_RETURN(auto e, inner_->OpenIpcEvent(handle));
    return std::unique_ptr<Event>(new CountingEvent(std::move(e), c_));
  }
  Result<MemoryResource*> memory(int device) override {
    PRISM_ASSIGN_OR_RETURN(MemoryResource * m, inner_->memory(device));
    MutexLock lock(mu_);
    auto& w = memory_[device];
    if (!w) w = std::make_unique<CountingMemory>(*m);
    return static_cast<MemoryResource*>(w.get());
  }
  Result<void*> OpenIpc(const IpcHandle& handle, int device) override {
    return inner_->OpenIpc(handle, device);
  }
  Status CloseIpc(void* ptr) override { return inner_->CloseIpc(ptr); }
  Status DeviceStatus(int device) override { return inner_->DeviceStatus(device); }
  Kernels& kernels() override { return kernels_; }
  bool CanAccessPeer(int device, int peer) const override {
    return inner_->CanAccessPeer(device, peer);
  }
  int PointerDevice(const void* ptr) const override { return inner_->PointerDevice(ptr); }
  CallCounts counts() const {
    return {c_.host_syncs.load(), c_.host_copies.load(), c_.device_copies.load(),
            c_.kernels.load()};
  }

 private:
  std::unique_ptr<Backend> inner_;
  Counters c_;
  CountingKernels kernels_;
  Mutex mu_;
  std::map<int, std::unique_ptr<CountingMemory>> memory_;
};

}  // namespace

std::unique_ptr<Backend> MakeCountingBackend(std::unique_ptr<Backend> inner) {
  return std::make_unique<CountingBackend>(std::move(inner));
}

std::optional<CallCounts> CountsOf(Backend& backend) {
  auto* c = dynamic_cast<CountingBackend*>(&backend);
  if (!c) return std::nullopt;
  return c->counts();
}

}  // namespace prism::gpu

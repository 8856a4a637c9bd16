// The cuda backend: real devices through the CUDA runtime, stream-ordered memory from a
// cudaMallocAsync pool per device (exportable to other processes), cuBLAS for matrix multiply.
// Kept thin, because CI cannot run it: every call goes through PRISM_CUDA_TRY and comes back as a
// Status with the call's text.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExtCudaRt.h>
#include <prism/gpu/backend.h>
#include <prism/gpu/profiling.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "gpu/cuda/cuda_kernels.h"

namespace prism::gpu::cuda {
namespace {

Status CudaStatus(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return Status::OK();
  // The error goes to the caller now: cleared from the thread's last error, so a later launch
  // check or DeviceStatus does not report it again. (A sticky error stays: every later call of
  // the context returns it.)
  cudaGetLastError();
  std::string text =
      std::string(call) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (e == cudaErrorMemoryAllocation) return Status::OutOfMemory(text);
  if (e == cudaErrorInvalidValue || e == cudaErrorInvalidDevice ||
      e == cudaErrorInvalidResourceHandle) {
    return Status::InvalidArgument(text);
  }
  return Status::Internal(text);
}

#define PRISM_CUDA_TRY(call) PRISM_RETURN_IF_ERROR(::prism::gpu::cuda::CudaStatus((call), #call))

std::string UuidText(const cudaUUID_t& u) {
  const auto* b = reinterpret_cast<const unsigned char*>(u.bytes);
  char buf[64];
  std::snprintf(buf, sizeof buf,
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return buf;
}

class CudaStream final : public Stream {
 public:
  CudaStream(int device, std::string name, cudaStream_t s, bool owned = true)
      : device_(device), name_(std::move(name)), s_(s), owned_(owned) {}
  ~CudaStream() override {
    if (!owned_) return;  // a framework's stream (WrapStream)
    cudaSetDevice(device_);
    cudaStreamDestroy(s_);
  }
  int device() const override { return device_; }
  const std::string& name() const override { return name_; }
  Status Wait(Event& event) override;
  Status Synchronize() override {
    PRISM_CUDA_TRY(cudaStreamSynchronize(s_));
    return Status::OK();
  }
  Result<bool> Query() override {
    cudaError_t e = cudaStreamQuery(s_);
    if (e == cudaErrorNotReady) return false;
    PRISM_CUDA_TRY(e);
    return true;
  }
  Status CopyAsync(void* dst, const void* src, size_t bytes) override {
    NvtxRange range("prism copy " + std::to_string(bytes) + " bytes on '" + name_ + "'");
    PRISM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s_));
    return Status::OK();
  }
  Status MemsetAsync(void* dst, int value, size_t bytes) override {
    PRISM_CUDA_TRY(cudaMemsetAsync(dst, value, bytes, s_));
    return Status::OK();
  }
  void* native() override { return s_; }
  cudaStream_t stream() const { return s_; }

 private:
  int device_;
  std::string name_;
  cudaStream_t s_;
  bool owned_;
};

cudaStream_t Native(Stream& s) { return static_cast<cudaStream_t>(s.native()); }

class CudaEvent final : public Event {
 public:
  enum class Kind { kLocal, kShared, kImported };
  CudaEvent(int device, cudaEvent_t e, Kind kind = Kind::kLocal)
      : device_(device), e_(e), kind_(kind) {}
  ~CudaEvent() override { cudaEventDestroy(e_); }
  int device() const override { return device_; }
  Result<IpcEventHandle> Export() override {
    if (kind_ != Kind::kShared)
      return Status::InvalidArgument("Export: only events from CreateIpcEvent can be shared");
    cudaIpcEventHandle_t h;
    PRISM_CUDA_TRY(cudaIpcGetEventHandle(&h, e_));
    return IpcEventHandle{std::string("cudaev1") +
                          std::string(reinterpret_cast<const char*>(&h), sizeof h)};
  }
  Status Record(Stream& stream) override {
    if (kind_ == Kind::kImported) {
      return Status::InvalidArgument(
          "an event opened from another process cannot be recorded here");
    }
    PRISM_CUDA_TRY(cudaEventRecord(e_, Native(stream)));
    return Status::OK();
  }
  Result<bool> Query() override {
    cudaError_t e = cudaEventQuery(e_);
    if (e == cudaErrorNotReady) return false;
    PRISM_CUDA_TRY(e);
    return true;
  }
  Status Synchronize() override {
    PRISM_CUDA_TRY(cudaEventSynchronize(e_));
    return Status::OK();
  }
  Result<double> ElapsedSince(Event& start) override {
    auto* s = dynamic_cast<CudaEvent*>(&start);
    if (!s) return Status::InvalidArgument("ElapsedSince: not an event of the cuda backend");
    float ms = 0;
    cudaError_t e = cudaEventElapsedTime(&ms, s->e_, e_);
    if (e == cudaErrorNotReady)
      return Status::Unavailable("ElapsedSince: an event's work is not complete yet");
    PRISM_CUDA_TRY(e);
    return static_cast<double>(ms);
  }
  cudaEvent_t event() const { return e_; }

 private:
  int device_;
  cudaEvent_t e_;
  Kind kind_;
};

Status CudaStream::Wait(Event& event) {
  auto* e = dynamic_cast<CudaEvent*>(&event);
  if (!e) return Status::InvalidArgument("Stream::Wait: not an event of the cuda backend");
  PRISM_CUDA_TRY(cudaStreamWaitEvent(s_, e->event(), 0));
  return Status::OK();
}

// A handle other processes can open: the pool's file descriptor (fetched with pidfd_getfd) and the
// pointer's export data.
struct WireHandle {
  char magic[8];
  int32_t pid;
  int32_t fd;
  uint64_t bytes;
  cudaMemPoolPtrExportData data;
};

class CudaMemory final : public MemoryResource {
 public:
  static Result<std::unique_ptr<CudaMemory>> Create(int device) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypePosixFileDescriptor;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool{};
    PRISM_CUDA_TRY(cudaMemPoolCreate(&pool, &props));
    uint64_t keep = UINT64_MAX;  // keep freed memory in the pool: no implicit release on sync
    PRISM_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    int fd = -1;
    PRISM_CUDA_TRY(
        cudaMemPoolExportToShareableHandle(&fd, pool, cudaMemHandleTypePosixFileDescriptor, 0));
    return std::unique_ptr<CudaMemory>(new CudaMemory(device, pool, fd));
  }
  ~CudaMemory() override {
    if (fd_ >= 0) close(fd_);
    cudaMemPoolDestroy(pool_);
  }
  int device() const override { return device_; }
  Result<void*> Allocate(size_t bytes, Stream& stream) override {
    NvtxRange range("prism alloc " + std::to_string(bytes) + " bytes");
    if (stream.device() != device_)
      return Status::InvalidArgument("Allocate on a stream of another device");
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (limit_ && in_use_ + bytes > *limit_) {
        return Status::OutOfMemory(
            "out of device memory in this share of device " + std::to_string(device_) +
            ": asked for " + std::to_string(bytes) + " bytes with " + std::to_string(in_use_) +
            " of its " + std::to_string(*limit_) + " bytes (gpu_memory) in use");
      }
      in_use_ += bytes;
    }
    void* p = nullptr;
    Status st = CudaStatus(cudaMallocFromPoolAsync(&p, bytes, pool_, Native(stream)),
                           "cudaMallocFromPoolAsync");
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok()) {
      in_use_ -= bytes;
      return st;
    }
    sizes_[p] = bytes;
    return p;
  }
  Status Deallocate(void* ptr, size_t bytes, Stream& stream) override {
    NvtxRange range("prism free " + std::to_string(bytes) + " bytes");
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(ptr);
      if (it == sizes_.end())
        return Status::InvalidArgument("Deallocate: not an allocation of this pool");
      in_use_ -= it->second;
      sizes_.erase(it);
    }
    PRISM_CUDA_TRY(cudaFreeAsync(ptr, Native(stream)));
    return Status::OK();
  }
  uint64_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return in_use_;
  }
  std::optional<uint64_t> limit() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return limit_;
  }
  void set_limit(std::optional<uint64_t> limit) override {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = limit;
  }
  bool Owns(const void* ptr, size_t bytes) const override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.upper_bound(const_cast<void*>(ptr));
    if (it == sizes_.begin()) return false;
    --it;
    auto start = reinterpret_cast<uintptr_t>(it->first), p = reinterpret_cast<uintptr_t>(ptr);
    return p >= start && p + bytes <= start + it->second;
  }
  Result<IpcHandle> Export(void* ptr, size_t bytes) override {
    WireHandle h{};
    std::memcpy(h.magic, "cuda1\0\0", 8);
    h.pid = static_cast<int32_t>(getpid());
    h.fd = fd_;
    h.bytes = bytes;
    PRISM_CUDA_TRY(cudaMemPoolExportPointer(&h.data, ptr));
    return IpcHandle{std::string(reinterpret_cast<const char*>(&h), sizeof h)};
  }

 private:
  CudaMemory(int device, cudaMemPool_t pool, int fd) : device_(device), pool_(pool), fd_(fd) {}
  int device_;
  cudaMemPool_t pool_;
  int fd_;
  mutable std::mutex mu_;
  uint64_t in_use_ = 0;
  std::optional<uint64_t> limit_;
  std::map<void*, size_t> sizes_;
};

class CudaKernels final : public Kernels {
 public:
  ~CudaKernels() override {
    for (auto& [device, handle] : blas_) cublasDestroy(handle);
  }
  Status Fill(Stream& s, DType dtype, void* x, size_t n, double value) override {
    PRISM_CUDA_TRY(LaunchFill(Native(s), dtype, x, n, value));
    return Status::OK();
  }
  Status Axpy(Stream& s, DType dtype, size_t n, double a, const void* x, void* y) override {
    PRISM_CUDA_TRY(LaunchAxpy(Native(s), dtype, n, a, x, y));
    return Status::OK();
  }
  Status Reduce(Stream& s, DType dtype, ReduceOp op, const void* x, size_t n, void* out) override {
    PRISM_CUDA_TRY(LaunchReduce(Native(s), dtype, op, x, n, out));
    return Status::OK();
  }
  Status Gemm(Stream& s, DType dtype, size_t m, size_t n, size_t k, double alpha, const void* a,
              const void* b, double beta, void* c) override {
    // A handle per stream: kernels of one handle share its workspace, so GEMMs running at once
    // on two streams (GPU tasks side by side) must not share one.
    std::lock_guard<std::mutex> lock(mu_);
    if (cudaSetDevice(s.device()) != cudaSuccess) return Status::Internal("cudaSetDevice failed");
    cublasHandle_t& h = blas_[Native(s)];
    if (!h && cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
      h = nullptr;
      return Status::Internal("cublasCreate failed");
    }
    if (cublasSetStream(h, Native(s)) != CUBLAS_STATUS_SUCCESS)
      return Status::Internal("cublasSetStream failed");
    // Row-major C = A B is column-major C^T = B^T A^T: swap the operands.
    int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    cublasStatus_t st;
    if (dtype == DType::kFloat32) {
      float al = static_cast<float>(alpha), be = static_cast<float>(beta);
      st = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &al, static_cast<const float*>(b), N,
                       static_cast<const float*>(a), K, &be, static_cast<float*>(c), N);
    } else if (dtype == DType::kFloat64) {
      st = cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, static_cast<const double*>(b),
                       N, static_cast<const double*>(a), K, &beta, static_cast<double*>(c), N);
    } else {
      return Status::InvalidArgument("Gemm takes float32 or float64");
    }
    if (st != CUBLAS_STATUS_SUCCESS)
      return Status::Internal("cuBLAS gemm failed: status " + std::to_string(st));
    return Status::OK();
  }
  Status Trap(Stream& s) override {
    PRISM_CUDA_TRY(LaunchTrap(Native(s)));
    return Status::OK();
  }

 private:
  std::mutex mu_;
  std::map<cudaStream_t, cublasHandle_t> blas_;
};

class CudaBackend final : public Backend {
 public:
  static Result<std::unique_ptr<CudaBackend>> Create() {
    int count = 0;  // stays 0 when there is no driver (cudaErrorInsufficientDriver)
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      cudaGetLastError();
      return Status::Unavailable(std::string("no CUDA device: ") +
                                 (e == cudaSuccess ? "none found" : cudaGetErrorString(e)));
    }
    std::unique_ptr<CudaBackend> b(new CudaBackend());
    for (int d = 0; d < count; ++d) {
      cudaDeviceProp prop{};
      PRISM_CUDA_TRY(cudaGetDeviceProperties(&prop, d));
      DeviceInfo info;
      info.ordinal = d;
      info.uuid = UuidText(prop.uuid);
      info.name = prop.name;
      info.total_memory = prop.totalGlobalMem;
      char bus[32] = {};
      if (cudaDeviceGetPCIBusId(bus, sizeof bus, d) == cudaSuccess) info.pci_bus_id = bus;
      b->devices_.push_back(info);
    }
    b->memory_.resize(count);
    return b;
  }

  std::string_view name() const override { return "cuda"; }
  int device_count() const override { return static_cast<int>(devices_.size()); }
  Result<DeviceInfo> device(int ordinal) const override {
    if (ordinal < 0 || ordinal >= device_count()) return NoDevice(ordinal);
    return devices_[ordinal];
  }
  Result<std::unique_ptr<Stream>> CreateStream(int device, std::string name) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    PRISM_CUDA_TRY(cudaSetDevice(device));
    cudaStream_t s{};
    PRISM_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (!name.empty()) nvtxNameCudaStreamA(s, name.c_str());
    return std::unique_ptr<Stream>(new CudaStream(device, std::move(name), s));
  }
  Result<std::unique_ptr<Stream>> WrapStream(int device, uintptr_t handle) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    cudaStream_t s = handle == 1   ? cudaStreamLegacy
                     : handle == 2 ? cudaStreamPerThread
                                   : reinterpret_cast<cudaStream_t>(handle);
    return std::unique_ptr<Stream>(new CudaStream(device, "framework stream", s, /*owned=*/false));
  }
  Result<std::unique_ptr<Event>> CreateEvent(int device, bool timing) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    PRISM_CUDA_TRY(cudaSetDevice(device));
    cudaEvent_t e{};
    PRISM_CUDA_TRY(
        cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    return std::unique_ptr<Event>(new CudaEvent(device, e));
  }
  Result<std::unique_ptr<Event>> CreateIpcEvent(int device) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    PRISM_CUDA_TRY(cudaSetDevice(device));
    cudaEvent_t e{};
    PRISM_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventInterprocess | cudaEventDisableTiming));
    return std::unique_ptr<Event>(new CudaEvent(device, e, CudaEvent::Kind::kShared));
  }
  Result<std::unique_ptr<Event>> OpenIpcEvent(const IpcEventHandle& handle) override {
    cudaIpcEventHandle_t h;
    if (handle.bytes.size() != 7 + sizeof h || handle.bytes.compare(0, 7, "cudaev1") != 0) {
      return Status::InvalidArgument("OpenIpcEvent: not an event handle of the cuda backend");
    }
    std::memcpy(&h, handle.bytes.data() + 7, sizeof h);
    cudaEvent_t e{};
    PRISM_CUDA_TRY(cudaIpcOpenEventHandle(&e, h));
    int device = 0;
    cudaGetDevice(&device);
    return std::unique_ptr<Event>(new CudaEvent(device, e, CudaEvent::Kind::kImported));
  }
  Result<MemoryResource*> memory(int device) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    std::lock_guard<std::mutex> lock(mu_);
    if (!memory_[device]) {
      PRISM_CUDA_TRY(cudaSetDevice(device));
      PRISM_ASSIGN_OR_RETURN(memory_[device], CudaMemory::Create(device));
    }
    return static_cast<MemoryResource*>(memory_[device].get());
  }
  Result<void*> OpenIpc(const IpcHandle& handle, int device) override {
    WireHandle h{};
    if (handle.bytes.size() != sizeof h)
      return Status::InvalidArgument("OpenIpc: not a cuda IPC handle");
    std::memcpy(&h, handle.bytes.data(), sizeof h);
    if (std::memcmp(h.magic, "cuda1", 5) != 0)
      return Status::InvalidArgument("OpenIpc: not a cuda IPC handle");
    if (h.pid == static_cast<int32_t>(getpid())) {
      // CUDA's own rule for IPC handles; here the pool would be imported into its exporter.
      return Status::InvalidArgument("OpenIpc: this process exported the memory (use its pointer)");
    }
    PRISM_CUDA_TRY(cudaSetDevice(device));
    std::lock_guard<std::mutex> lock(mu_);
    auto key = std::make_pair(h.pid, h.fd);
    auto pool = imported_pools_.find(key);
    if (pool == imported_pools_.end()) {
      int pidfd = static_cast<int>(syscall(SYS_pidfd_open, h.pid, 0));
      if (pidfd < 0)
        return Status::NotFound("OpenIpc: the exporting process " + std::to_string(h.pid) +
                                " is gone");
      int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, h.fd, 0));
      close(pidfd);
      if (fd < 0) {
        return Status::PermissionDenied("OpenIpc: cannot fetch the pool of process " +
                                        std::to_string(h.pid) + ": " + std::strerror(errno));
      }
      cudaMemPool_t imported{};
      cudaError_t e = cudaMemPoolImportFromShareableHandle(
          &imported, reinterpret_cast<void*>(static_cast<uintptr_t>(fd)),
          cudaMemHandleTypePosixFileDescriptor, 0);
      close(fd);
      PRISM_CUDA_TRY(e);
      pool = imported_pools_.emplace(key, imported).first;
    }
    void* p = nullptr;
    PRISM_CUDA_TRY(cudaMemPoolImportPointer(&p, pool->second, &h.data));
    return p;
  }
  Status CloseIpc(void* ptr) override {
    PRISM_CUDA_TRY(cudaFree(ptr));
    return Status::OK();
  }
  Status DeviceStatus(int device) override {
    if (device < 0 || device >= device_count()) return NoDevice(device);
    PRISM_CUDA_TRY(cudaSetDevice(device));
    // A failed call's own error was returned to its caller: only a sticky error (a faulted
    // context) counts, and every call of the context returns that one, a query of the default
    // stream too.
    cudaGetLastError();
    cudaError_t e = cudaStreamQuery(0);
    if (e == cudaErrorNotReady) return Status::OK();
    PRISM_CUDA_TRY(e);
    return Status::OK();
  }
  Kernels& kernels() override { return kernels_; }
  bool CanAccessPeer(int device, int peer) const override {
    if (device == peer) return true;
    int can = 0;
    return cudaDeviceCanAccessPeer(&can, peer, device) == cudaSuccess && can;
  }
  int PointerDevice(const void* ptr) const override {
    {  // prism's own allocations first: no driver call on the ops' hot path
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& m : memory_) {
        if (m && m->Owns(ptr, 1)) return m->device();
      }
    }
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device
                                                                                   : -1;
  }

 private:
  static Status NoDevice(int d) {
    return Status::InvalidArgument("no CUDA device " + std::to_string(d));
  }

  std::vector<DeviceInfo> devices_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<CudaMemory>> memory_;
  std::map<std::pair<int32_t, int32_t>, cudaMemPool_t> imported_pools_;
  CudaKernels kernels_;
};

}  // namespace
}  // namespace prism::gpu::cuda

extern "C" __attribute__((visibility("default"))) int prism_gpu_cuda_create(
    prism::gpu::Backend** out, char* error, size_t size) {
  auto b = prism::gpu::cuda::CudaBackend::Create();
  if (!b.ok()) {
    std::snprintf(error, size, "%s", b.status().message().c_str());
    return 1;
  }
  *out = std::move(b).value().release();
  return 0;
}

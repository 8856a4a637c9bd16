// The device backend interface: devices, named streams, events, stream-ordered memory and the
// kernels of prism's op library. Two implementations pass the same test suite: `cuda` (real
// devices) and `sim` (simulated devices on the host, adversarial: see docs/gpu.md).
//
// Stream contract (as CUDA's and rmm's): every asynchronous call takes the stream explicitly and
// never owns it; work on one stream runs in order; work on two streams is unordered unless one
// waits on an event recorded on the other. Memory from a MemoryResource is valid on its allocating
// stream at once, and on other streams only after they are ordered after that allocation.
// Errors of asynchronous work surface at a later call (Synchronize, Query or the next launch);
// a fault inside a kernel is sticky: every later call on that device in this process fails.
#pragma once

#include <prism/status.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace prism::gpu {

/// Element types of device arrays (and of the op library), with DLPack's meaning.
enum class DType : uint8_t { kFloat16, kBFloat16, kFloat32, kFloat64, kInt32, kInt64, kUInt8 };
size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);

struct DeviceInfo {
  /// The ordinal in this process: CUDA_VISIBLE_DEVICES renumbers devices per process.
  int ordinal = 0;
  /// Stable across processes and renumbering ("GPU-<hex>"): how prism names a device anywhere.
  std::string uuid;
  std::string name;
  uint64_t total_memory = 0;
  std::string pci_bus_id;
};

class Stream;

/// Serialized handle of an event shared with other processes on the node.
struct IpcEventHandle {
  std::string bytes;
};

/// A point in a stream's work. Thread-safe.
class Event {
 public:
  virtual ~Event() = default;
  virtual int device() const = 0;
  /// Captures the work submitted to `stream` so far (re-recording replaces the capture).
  virtual Status Record(Stream& stream) = 0;
  /// Whether the captured work is done; true for an event never recorded (as CUDA).
  virtual Result<bool> Query() = 0;
  /// Blocks the calling thread until the captured work is done (at once if never recorded).
  virtual Status Synchronize() = 0;
  /// Milliseconds of device time from `start` to this event; both recorded and complete.
  virtual Result<double> ElapsedSince(Event& start) = 0;
  /// A handle another process opens with Backend::OpenIpcEvent; waits there follow this event's
  /// latest Record at the time of the wait. Only for events from CreateIpcEvent.
  virtual Result<IpcEventHandle> Export() = 0;
};

/// An in-order queue of device work with a name (shown in profiles and timelines). Thread-safe.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual int device() const = 0;
  virtual const std::string& name() const = 0;
  /// Later work on this stream waits for `event`'s captured work (a no-op if never recorded).
  virtual Status Wait(Event& event) = 0;
  /// Blocks the calling thread until all work submitted so far is done.
  virtual Status Synchronize() = 0;
  /// Whether all work submitted so far is done.
  virtual Result<bool> Query() = 0;
  /// Copies `bytes` between any two of: device memory of this backend, host memory.
  virtual Status CopyAsync(void* dst, const void* src, size_t bytes) = 0;
  virtual Status MemsetAsync(void* dst, int value, size_t bytes) = 0;
  /// The native handle (cudaStream_t for cuda; null for sim).
  virtual void* native() = 0;
};

/// Serialized handle of device memory exported to other processes on the node.
struct IpcHandle {
  std::string bytes;
};

/// Stream-ordered device memory of one device (cudaMallocAsync pools on cuda). Thread-safe.
class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  virtual int device() const = 0;
  /// `bytes` of device memory usable on `stream` at once. OutOfMemory past the device's memory
  /// or past the limit.
  virtual Result<void*> Allocate(size_t bytes, Stream& stream) = 0;
  /// Frees once `stream` reaches this point; work on other streams must be ordered before it.
  virtual Status Deallocate(void* ptr, size_t bytes, Stream& stream) = 0;
  /// Bytes allocated through this resource and not freed.
  virtual uint64_t bytes_in_use() const = 0;
  /// A cap on bytes_in_use (a task's `gpu_memory` share); nullopt for the whole device.
  virtual std::optional<uint64_t> limit() const = 0;
  virtual void set_limit(std::optional<uint64_t> limit) = 0;
  /// Exports an allocation of this resource to other processes of the node.
  virtual Result<IpcHandle> Export(void* ptr, size_t bytes) = 0;
  /// Whether [ptr, ptr + bytes) lies inside one live allocation of this resource.
  virtual bool Owns(const void* ptr, size_t bytes) const = 0;
};

/// Device memory owned like rmm's device_buffer: allocated on a stream, freed on its stream (the
/// one given at allocation or set later; every use elsewhere must be ordered before the free).
/// Move-only; not thread-safe.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(MemoryResource& memory, size_t bytes, Stream& stream);
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  /// Frees (a failure is logged; call Free() to see it).
  ~DeviceBuffer();
  Status Free();

  void* data() const { return data_; }
  size_t size() const { return size_; }
  int device() const { return memory_ ? memory_->device() : -1; }
  Stream* stream() const { return stream_; }
  /// The stream the buffer will be freed on.
  void set_stream(Stream& stream) { stream_ = &stream; }

 private:
  MemoryResource* memory_ = nullptr;
  Stream* stream_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

/// How a reduction combines elements.
enum class ReduceOp : uint8_t { kSum, kProd, kMin, kMax };

/// The device kernels under prism's op library (gpu/ops.h validates and calls these). Every call
/// is asynchronous on `stream`; pointers are device memory of the stream's device; `n` elements.
class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual Status Fill(Stream& stream, DType dtype, void* x, size_t n, double value) = 0;
  /// y = a * x + y (axpy), or y = a * y when x is null (scale).
  virtual Status Axpy(Stream& stream, DType dtype, size_t n, double a, const void* x, void* y) = 0;
  /// out[0] = op over x[0..n).
  virtual Status Reduce(Stream& stream, DType dtype, ReduceOp op, const void* x, size_t n,
                        void* out) = 0;
  /// Row-major C[m,n] = alpha * A[m,k] * B[k,n] + beta * C (float32 and float64).
  virtual Status Gemm(Stream& stream, DType dtype, size_t m, size_t n, size_t k, double alpha,
                      const void* a, const void* b, double beta, void* c) = 0;
  /// A kernel that faults (an illegal address), for tests of fault handling.
  virtual Status Trap(Stream& stream) = 0;
};

/// A device backend: the devices this process sees and what runs on them. Thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;
  /// "cuda" or "sim".
  virtual std::string_view name() const = 0;
  virtual int device_count() const = 0;
  virtual Result<DeviceInfo> device(int ordinal) const = 0;
  /// A new stream on `device`, named `name`.
  virtual Result<std::unique_ptr<Stream>> CreateStream(int device, std::string name) = 0;
  /// A stream someone else made (a framework's), by its native handle as DLPack's `stream`
  /// argument gives it (cuda: a cudaStream_t; 1 = the legacy default stream, 2 = the per-thread
  /// one): not owned, so it outlives the wrapper. Unavailable where streams have no handles
  /// (sim: its consumers are host code).
  virtual Result<std::unique_ptr<Stream>> WrapStream(int device, uintptr_t handle) {
    return Status::Unavailable(std::string(name()) + " streams have no native handles");
  }
  /// A new event on `device`; `timing` events can measure ElapsedSince.
  virtual Result<std::unique_ptr<Event>> CreateEvent(int device, bool timing = false) = 0;
  /// An event other processes can wait on (Event::Export); it does not time.
  virtual Result<std::unique_ptr<Event>> CreateIpcEvent(int device) = 0;
  /// Another process's exported event. Stream::Wait, Query and Synchronize follow the exporter's
  /// latest Record as of the call; it cannot be recorded here.
  virtual Result<std::unique_ptr<Event>> OpenIpcEvent(const IpcEventHandle& handle) = 0;
  /// The stream-ordered memory of `device` (owned by the backend).
  virtual Result<MemoryResource*> memory(int device) = 0;
  /// Maps memory another process exported; `device` is this process's ordinal of its device.
  virtual Result<void*> OpenIpc(const IpcHandle& handle, int device) = 0;
  virtual Status CloseIpc(void* ptr) = 0;
  /// The sticky error of `device` in this process, or OK.
  virtual Status DeviceStatus(int device) = 0;
  virtual Kernels& kernels() = 0;
  /// Whether device `peer` can access device `device`'s memory directly.
  virtual bool CanAccessPeer(int device, int peer) const = 0;
  /// The ordinal of the device whose memory `ptr` points into, or -1 for host memory.
  virtual int PointerDevice(const void* ptr) const = 0;
};

/// Which backend a process uses: $PRISM_GPU_BACKEND ("sim", "cuda", or "auto"/unset: cuda when a
/// driver and a device exist, else none).
struct BackendConfig {
  std::string kind;      // "sim", "cuda", "auto" or "" (= auto)
  std::string topology;  // sim: a profile name or file (topology.h); default h100-sxm-8
  std::optional<std::string> visible;  // CUDA_VISIBLE_DEVICES; nullopt when unset
  bool count_calls = false;            // $PRISM_GPU_COUNT_CALLS=1: wrapped in a counting backend
};

/// The configuration this process's environment asks for.
BackendConfig BackendConfigFromEnv();

/// Creates the backend `config` names. NotFound when "auto" finds no devices; Unavailable when
/// "cuda" is asked for and no driver or device exists.
Result<std::unique_ptr<Backend>> CreateBackend(const BackendConfig& config);

}  // namespace prism::gpu

// Tensors: typed, shaped device memory with DLPack 1.x metadata, exchanged with PyTorch, CuPy,
// JAX and NumPy without copies where the memory is prism's.
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/context.h>
#include <prism/gpu/dlpack.h>
#include <prism/gpu/ops.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace prism::gpu {

/// A contiguous row-major device array. A value type: copies share the memory (freed when the
/// last goes, on the stream it was allocated on). Not thread-safe to mutate; its data follows the
/// stream contract of backend.h (ordered on `stream()`).
class Tensor {
 public:
  Tensor() = default;
  /// A new tensor on `memory`'s device, allocated on `stream`.
  static Result<Tensor> Empty(Backend& backend, MemoryResource& memory, Stream& stream, DType dtype,
                              std::vector<int64_t> shape);
  /// A new tensor on the GPU task's device and stream.
  static Result<Tensor> Empty(const Context& ctx, DType dtype, std::vector<int64_t> shape) {
    return Empty(ctx.backend(), ctx.memory(), ctx.stream(), dtype, std::move(shape));
  }

  /// Takes a DLPack tensor (ownership passes: its deleter runs when prism is done with it).
  /// Zero copy when its memory is an allocation of `memory` (prism's pool): the tensor keeps the
  /// producer's memory alive. Anything else (host memory, another allocator's device memory) is
  /// copied into `memory` on `stream`, since prism cannot tell when its owner reuses it.
  /// Contiguous row-major tensors of prism's dtypes only (InvalidArgument otherwise).
  static Result<Tensor> FromDLPack(DLManagedTensorVersioned* tensor, Backend& backend,
                                   MemoryResource& memory, Stream& stream);
  /// A DLPack 1.x view of this tensor (it lives until the consumer calls the deleter). When
  /// `consumer` is given, that stream waits for this tensor's work (DLPack's stream argument);
  /// `read_only` sets DLPACK_FLAG_BITMASK_READ_ONLY. Sim devices are host memory: kDLCPU.
  Result<DLManagedTensorVersioned*> ToDLPack(Backend& backend, Stream* consumer = nullptr,
                                             bool read_only = false) const;

  bool valid() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  size_t count() const;
  size_t bytes() const { return count() * DTypeSize(dtype_); }
  void* data() const;
  int device() const { return device_; }
  /// The stream its memory is ordered on (work on others must wait for it).
  Stream* stream() const;
  /// Whether this tensor came from memory prism did not allocate, copied in (FromDLPack).
  bool copied_in() const { return copied_in_; }
  DeviceArray array() const { return {data(), dtype_, count(), device_}; }
  /// Copies it to host memory: waits for the work that produces it (a host synchronization).
  Result<std::vector<uint8_t>> ToHost() const;

  /// Work on `stream` uses this tensor: its memory is freed only after that work (as
  /// PyTorch's record_stream). The tensor's own stream needs no call.
  void AddUser(Backend& backend, Stream& stream) const;
  /// (For the runtime.) How many Tensor copies share this memory (a device object nobody but the
  /// runtime holds may spill to host memory).
  long holders() const { return storage_.use_count(); }
  /// (For the runtime.) Whether its memory is held through another library's DLPack tensor
  /// (FromDLPack without a copy): dropping it runs that library's deleter.
  bool foreign() const;
  /// (For the runtime.) A string kept with the tensor's memory: how it was exported, once.
  std::string& export_cache() const;
  /// (For the runtime.) A tensor over memory someone else owns: `keep` holds it (and releases
  /// it when the last copy goes); its work is ordered on `stream`.
  static Tensor View(DType dtype, std::vector<int64_t> shape, int device, bool host_memory,
                     void* data, Stream* stream, std::shared_ptr<void> keep);

 private:
  struct Storage;
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  int device_ = 0;
  bool host_memory_ = false;  // sim: device memory is host memory
  bool copied_in_ = false;
};

namespace internal {
/// How tensors travel in values (implemented by the runtime): the first packing of a tensor
/// exports it (its memory and a shared event recorded on its stream, which covers the work that
/// made it) and keeps it alive in this process; a descriptor decodes to the same tensor in this
/// process, or to an import elsewhere on the node, with the decoding GPU task's stream waiting
/// on the event. Throw prism::Error subclasses on failure.
std::string PackTensor(const Tensor& tensor);
Tensor UnpackTensor(std::string_view descriptor);
inline constexpr int8_t kTensorExt = 3;
}  // namespace internal

/// DLPack's dtype for a prism dtype, and back (InvalidArgument for a dtype prism has not).
DLDataType ToDLDataType(DType dtype);
Result<DType> FromDLDataType(DLDataType type);

}  // namespace prism::gpu

// Tensors in values (task arguments and results, Put): an msgpack ext of the runtime's descriptor.
#include <msgpack.hpp>
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<prism::gpu::Tensor> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o,
                                        const prism::gpu::Tensor& t) const {
      std::string d = prism::gpu::internal::PackTensor(t);
      o.pack_ext(static_cast<uint32_t>(d.size()), prism::gpu::internal::kTensorExt);
      o.pack_ext_body(d.data(), static_cast<uint32_t>(d.size()));
      return o;
    }
  };
  template <>
  struct convert<prism::gpu::Tensor> {
    const msgpack::object& operator()(const msgpack::object& o, prism::gpu::Tensor& t) const {
      if (o.type != msgpack::type::EXT || o.via.ext.type() != prism::gpu::internal::kTensorExt) {
        throw msgpack::type_error();
      }
      t = prism::gpu::internal::UnpackTensor(std::string_view(o.via.ext.data(), o.via.ext.size));
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

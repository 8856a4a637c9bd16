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
  static Result<Tensor> FromDLPack(DLManagedTensorVersioned* tensor, Backend& backend, MemoryResource& memory,
                                   Stream& stream);
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

 private:
  struct Storage;
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  int device_ = 0;
  bool host_memory_ = false;  // sim: device memory is host memory
  bool copied_in_ = false;
};

/// DLPack's dtype for a prism dtype, and back (InvalidArgument for a dtype prism has not).
DLDataType ToDLDataType(DType dtype);
Result<DType> FromDLDataType(DLDataType type);

}  // namespace prism::gpu

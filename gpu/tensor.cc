#include <prism/gpu/tensor.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>

#include "base/mutex.h"

namespace prism::gpu {

// What a tensor's memory is: a buffer prism allocated, or a DLPack producer's memory kept alive
// until its deleter runs.
struct Tensor::Storage {
  DeviceBuffer buffer;
  DLManagedTensorVersioned* foreign = nullptr;
  void* foreign_data = nullptr;
  std::shared_ptr<void> keep;  // a View's owner
  Stream* stream = nullptr;
  std::string export_cache;
  // Other streams that used it, and the backend to order the free after them.
  Mutex users_mu;
  Backend* backend = nullptr;
  std::vector<Stream*> users;
  ~Storage() {
    if (buffer.data() != nullptr && backend != nullptr) {
      for (Stream* s : users) {  // the free (on `stream`) waits for their work
        auto e = backend->CreateEvent(s->device());
        if (e.ok() && (*e)->Record(*s).ok()) (void)stream->Wait(**e);
      }
    }
    if (foreign && foreign->deleter) foreign->deleter(foreign);
  }
  void* data() const { return foreign || keep ? foreign_data : buffer.data(); }
};

namespace {

size_t Product(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), size_t{1},
                         [](size_t a, int64_t b) { return a * static_cast<size_t>(b); });
}

Status CheckShape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) {
    if (d < 0) return Status::InvalidArgument("a tensor's dimensions are >= 0");
  }
  if (shape.size() > 32) return Status::InvalidArgument("a tensor has at most 32 dimensions");
  return Status::OK();
}

// What a DLPack consumer holds: the view, its shape and strides, and a share of the storage.
struct Exported {
  DLManagedTensorVersioned managed{};
  std::vector<int64_t> shape, strides;
  std::shared_ptr<void> keep;
};

}  // namespace

DLDataType ToDLDataType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return {kDLFloat, 16, 1};
    case DType::kBFloat16:
      return {kDLBfloat, 16, 1};
    case DType::kFloat32:
      return {kDLFloat, 32, 1};
    case DType::kFloat64:
      return {kDLFloat, 64, 1};
    case DType::kInt32:
      return {kDLInt, 32, 1};
    case DType::kInt64:
      return {kDLInt, 64, 1};
    case DType::kUInt8:
      return {kDLUInt, 8, 1};
  }
  return {kDLUInt, 8, 1};
}

Result<DType> FromDLDataType(DLDataType t) {
  if (t.lanes == 1) {
    if (t.code == kDLFloat && t.bits == 16) return DType::kFloat16;
    if (t.code == kDLBfloat && t.bits == 16) return DType::kBFloat16;
    if (t.code == kDLFloat && t.bits == 32) return DType::kFloat32;
    if (t.code == kDLFloat && t.bits == 64) return DType::kFloat64;
    if (t.code == kDLInt && t.bits == 32) return DType::kInt32;
    if (t.code == kDLInt && t.bits == 64) return DType::kInt64;
    if (t.code == kDLUInt && t.bits == 8) return DType::kUInt8;
  }
  return Status::InvalidArgument("prism has no dtype for DLPack code " + std::to_string(t.code) +
                                 ", " + std::to_string(t.bits) + " bits, " +
                                 std::to_string(t.lanes) + " lanes");
}

size_t Tensor::count() const { return Product(shape_); }

void Tensor::AddUser(Backend& backend, Stream& stream) const {
  if (!storage_ || &stream == storage_->stream) return;
  MutexLock lock(storage_->users_mu);
  storage_->backend = &backend;
  if (std::find(storage_->users.begin(), storage_->users.end(), &stream) == storage_->users.end()) {
    storage_->users.push_back(&stream);
  }
}

std::string& Tensor::export_cache() const {
  static std::string none;
  return storage_ ? storage_->export_cache : none;
}

Tensor Tensor::View(DType dtype, std::vector<int64_t> shape, int device, bool host_memory,
                    void* data, Stream* stream, std::shared_ptr<void> keep) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.device_ = device;
  t.host_memory_ = host_memory;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->foreign_data = data;
  t.storage_->keep = std::move(keep);
  t.storage_->stream = stream;
  return t;
}

Result<std::vector<uint8_t>> Tensor::ToHost() const {
  if (!storage_) return Status::InvalidArgument("ToHost of an empty tensor");
  std::vector<uint8_t> out(bytes());
  if (out.empty()) return out;
  PRISM_RETURN_IF_ERROR(storage_->stream->CopyAsync(out.data(), data(), out.size()));
  PRISM_RETURN_IF_ERROR(storage_->stream->Synchronize());
  return out;
}
void* Tensor::data() const { return storage_ ? storage_->data() : nullptr; }
Stream* Tensor::stream() const { return storage_ ? storage_->stream : nullptr; }

Result<Tensor> Tensor::Empty(Backend& backend, MemoryResource& memory, Stream& stream, DType dtype,
                             std::vector<int64_t> shape) {
  PRISM_RETURN_IF_ERROR(CheckShape(shape));
  if (stream.device() != memory.device()) {
    return Status::InvalidArgument(
        "Tensor::Empty: the stream is on another device than the memory");
  }
  Tensor t = View(dtype, std::move(shape), memory.device(), backend.name() == "sim", nullptr,
                  &stream, nullptr);
  PRISM_ASSIGN_OR_RETURN(t.storage_->buffer, DeviceBuffer::Allocate(memory, t.bytes(), stream));
  return t;
}

Result<Tensor> Tensor::FromDLPack(DLManagedTensorVersioned* in, Backend& backend,
                                  MemoryResource& memory, Stream& stream) {
  if (in == nullptr) return Status::InvalidArgument("FromDLPack: no tensor");
  // Whatever happens, the producer's deleter runs once.
  std::unique_ptr<DLManagedTensorVersioned, void (*)(DLManagedTensorVersioned*)> owned(
      in, [](DLManagedTensorVersioned* m) {
        if (m->deleter) m->deleter(m);
      });
  if (in->version.major != kDLPackMajor) {
    return Status::InvalidArgument("FromDLPack: DLPack " + std::to_string(in->version.major) + "." +
                                   std::to_string(in->version.minor) +
                                   " tensors are not understood (1.x are)");
  }
  const DLTensor& t = in->dl_tensor;
  PRISM_ASSIGN_OR_RETURN(DType dtype, FromDLDataType(t.dtype));
  if (t.ndim < 0 || t.ndim > 32 || (t.ndim > 0 && t.shape == nullptr)) {
    return Status::InvalidArgument("FromDLPack: a bad shape");
  }
  std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
  PRISM_RETURN_IF_ERROR(CheckShape(shape));
  if (t.strides != nullptr) {  // null means compact row-major already
    int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && t.strides[i] != expect) {
        return Status::InvalidArgument(
            "FromDLPack: only contiguous row-major tensors (make it contiguous first)");
      }
      expect *= shape[i];
    }
  }
  auto* data = static_cast<uint8_t*>(t.data) + t.byte_offset;
  Tensor out = View(dtype, std::move(shape), memory.device(), backend.name() == "sim", nullptr,
                    &stream, nullptr);
  size_t bytes = out.bytes();
  if (bytes == 0 || memory.Owns(data, bytes)) {
    out.storage_->foreign = owned.release();  // zero copy: prism's own memory, kept alive
    out.storage_->foreign_data = data;
    return out;
  }
  // Not prism's memory: copied, on `stream` (the producer's work must be done: DLPack's
  // producer made the consumer's stream wait, or the memory is host memory).
  PRISM_ASSIGN_OR_RETURN(out.storage_->buffer, DeviceBuffer::Allocate(memory, bytes, stream));
  PRISM_RETURN_IF_ERROR(stream.CopyAsync(out.storage_->buffer.data(), data, bytes));
  // The source may be freed by its owner as soon as the deleter runs: wait for the copy first.
  PRISM_RETURN_IF_ERROR(stream.Synchronize());
  out.copied_in_ = true;
  return out;
}

bool Tensor::foreign() const { return storage_ && storage_->foreign != nullptr; }

Result<DLManagedTensorVersioned*> Tensor::ToDLPack(Backend& backend, Stream* consumer,
                                                   bool read_only) const {
  if (!storage_) return Status::InvalidArgument("ToDLPack of an empty tensor");
  if (consumer != nullptr && consumer != storage_->stream) {
    PRISM_ASSIGN_OR_RETURN(auto ready, backend.CreateEvent(device_));
    PRISM_RETURN_IF_ERROR(ready->Record(*storage_->stream));
    PRISM_RETURN_IF_ERROR(consumer->Wait(*ready));
    AddUser(backend, *consumer);
  }
  auto* e = new Exported();
  e->shape = shape_;
  e->strides.resize(shape_.size());
  int64_t stride = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    e->strides[i] = stride;
    stride *= shape_[i];
  }
  e->keep = storage_;
  DLManagedTensorVersioned& m = e->managed;
  m.version = {kDLPackMajor, kDLPackMinor};
  m.manager_ctx = e;
  m.deleter = [](DLManagedTensorVersioned* self) {
    delete static_cast<Exported*>(self->manager_ctx);
  };
  m.flags = read_only ? DLPACK_FLAG_BITMASK_READ_ONLY : 0;
  m.dl_tensor.data = storage_->data();
  m.dl_tensor.device = host_memory_ ? DLDevice{kDLCPU, 0} : DLDevice{kDLCUDA, device_};
  m.dl_tensor.ndim = static_cast<int32_t>(shape_.size());
  m.dl_tensor.dtype = ToDLDataType(dtype_);
  m.dl_tensor.shape = e->shape.data();
  m.dl_tensor.strides = e->strides.data();
  m.dl_tensor.byte_offset = 0;
  return &m;
}

}  // namespace prism::gpu

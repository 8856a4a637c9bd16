#include <prism/gpu/ops.h>

namespace prism::gpu::ops {
namespace {

Status CheckArray(Backend& backend, Stream& stream, const DeviceArray& x, const char* what) {
  if (x.count > 0 && !x.data) return Status::InvalidArgument(std::string(what) + " has no data");
  if (x.device != stream.device()) {
    return Status::InvalidArgument(std::string(what) + " is on device " + std::to_string(x.device) +
                                   ", the stream on device " + std::to_string(stream.device()));
  }
  if (x.count > 0 && backend.PointerDevice(x.data) != x.device) {
    return Status::InvalidArgument(std::string(what) + " is not memory of device " +
                                   std::to_string(x.device));
  }
  return Status::OK();
}

Status SameShape(const DeviceArray& a, const DeviceArray& b, const char* op) {
  if (a.dtype != b.dtype) {
    return Status::InvalidArgument(std::string(op) + ": dtypes differ (" +
                                   std::string(DTypeName(a.dtype)) + " and " +
                                   std::string(DTypeName(b.dtype)) + ")");
  }
  if (a.count != b.count) {
    return Status::InvalidArgument(std::string(op) + ": " + std::to_string(a.count) + " and " +
                                   std::to_string(b.count) + " elements");
  }
  return Status::OK();
}

}  // namespace

Status Fill(Backend& backend, Stream& stream, const DeviceArray& x, double value) {
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, x, "Fill's array"));
  if (x.count == 0) return Status::OK();
  return backend.kernels().Fill(stream, x.dtype, x.data, x.count, value);
}

Status Copy(Backend& backend, Stream& stream, const DeviceArray& dst, const DeviceArray& src) {
  PRISM_RETURN_IF_ERROR(SameShape(dst, src, "Copy"));
  if (dst.count > 0 && (!dst.data || !src.data))
    return Status::InvalidArgument("Copy of an array with no data");
  if (dst.count == 0) return Status::OK();
  return stream.CopyAsync(dst.data, src.data, dst.bytes());
}

Status Axpy(Backend& backend, Stream& stream, double a, const DeviceArray& x,
            const DeviceArray& y) {
  PRISM_RETURN_IF_ERROR(SameShape(x, y, "Axpy"));
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, x, "Axpy's x"));
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, y, "Axpy's y"));
  if (y.count == 0) return Status::OK();
  return backend.kernels().Axpy(stream, y.dtype, y.count, a, x.data, y.data);
}

Status Scale(Backend& backend, Stream& stream, double a, const DeviceArray& y) {
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, y, "Scale's array"));
  if (y.count == 0) return Status::OK();
  return backend.kernels().Axpy(stream, y.dtype, y.count, a, nullptr, y.data);
}

Status Reduce(Backend& backend, Stream& stream, ReduceOp op, const DeviceArray& x,
              const DeviceArray& out) {
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, x, "Reduce's input"));
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, out, "Reduce's output"));
  if (out.count != 1 || out.dtype != x.dtype) {
    return Status::InvalidArgument("Reduce's output must be one element of the input's dtype");
  }
  return backend.kernels().Reduce(stream, x.dtype, op, x.data, x.count, out.data);
}

Status Matmul(Backend& backend, Stream& stream, const DeviceArray& a, const DeviceArray& b,
              const DeviceArray& c, size_t m, size_t n, size_t k, double alpha, double beta) {
  if (a.dtype != b.dtype || a.dtype != c.dtype)
    return Status::InvalidArgument("Matmul: dtypes differ");
  if (a.dtype != DType::kFloat32 && a.dtype != DType::kFloat64) {
    return Status::InvalidArgument("Matmul takes float32 or float64, not " +
                                   std::string(DTypeName(a.dtype)));
  }
  if (a.count != m * k || b.count != k * n || c.count != m * n) {
    return Status::InvalidArgument("Matmul: shapes do not match m=" + std::to_string(m) +
                                   " n=" + std::to_string(n) + " k=" + std::to_string(k));
  }
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, a, "Matmul's a"));
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, b, "Matmul's b"));
  PRISM_RETURN_IF_ERROR(CheckArray(backend, stream, c, "Matmul's c"));
  if (c.count == 0) return Status::OK();
  return backend.kernels().Gemm(stream, a.dtype, m, n, k, alpha, a.data, b.data, beta, c.data);
}

}  // namespace prism::gpu::ops

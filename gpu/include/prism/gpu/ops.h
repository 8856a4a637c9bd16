// prism's small device op library (fill, copy, axpy/scale, reductions, matrix multiply), written
// once against the backend interface: it checks its arguments and calls the backend's kernels
// (cuBLAS and CUDA kernels on cuda, host loops on sim). Every op is asynchronous on `stream`.
#pragma once

#include <prism/gpu/backend.h>

namespace prism::gpu {

/// A typed view of `count` elements of device memory on `device` (not owning).
struct DeviceArray {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  size_t count = 0;
  int device = 0;
  size_t bytes() const { return count * DTypeSize(dtype); }
};

namespace ops {

Status Fill(Backend& backend, Stream& stream, const DeviceArray& x, double value);
/// dst = src (same dtype and count; any two devices this backend can reach).
Status Copy(Backend& backend, Stream& stream, const DeviceArray& dst, const DeviceArray& src);
/// y = a * x + y.
Status Axpy(Backend& backend, Stream& stream, double a, const DeviceArray& x, const DeviceArray& y);
/// y = a * y.
Status Scale(Backend& backend, Stream& stream, double a, const DeviceArray& y);
/// out[0] = op(x) (out: one element of x's dtype).
Status Reduce(Backend& backend, Stream& stream, ReduceOp op, const DeviceArray& x,
              const DeviceArray& out);
/// Row-major c[m,n] = alpha * a[m,k] * b[k,n] + beta * c; float32 or float64.
Status Matmul(Backend& backend, Stream& stream, const DeviceArray& a, const DeviceArray& b,
              const DeviceArray& c, size_t m, size_t n, size_t k, double alpha = 1,
              double beta = 0);

}  // namespace ops
}  // namespace prism::gpu

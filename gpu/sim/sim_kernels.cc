#include "gpu/sim/sim_kernels.h"

#include <prism/gpu/float16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace prism::gpu::sim {
namespace {

double Load(DType t, const void* p, size_t i) {
  switch (t) {
    case DType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kFloat32:
      return static_cast<const float*>(p)[i];
    case DType::kFloat64:
      return static_cast<const double*>(p)[i];
    case DType::kInt32:
      return static_cast<const int32_t*>(p)[i];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::kUInt8:
      return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

void Store(DType t, void* p, size_t i, double v) {
  switch (t) {
    case DType::kFloat16:
      static_cast<uint16_t*>(p)[i] = FloatToHalf(static_cast<float>(v));
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(p)[i] = FloatToBFloat16(static_cast<float>(v));
      break;
    case DType::kFloat32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    case DType::kFloat64:
      static_cast<double*>(p)[i] = v;
      break;
    case DType::kInt32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v);
      break;
    case DType::kInt64:
      static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v);
      break;
    case DType::kUInt8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
      break;
  }
}

// Integer reductions stay exact in int64 (a double would round past 2^53).
template <typename T>
void ReduceInt(ReduceOp op, const T* x, size_t n, T* out) {
  T acc = op == ReduceOp::kSum    ? 0
          : op == ReduceOp::kProd ? 1
          : op == ReduceOp::kMin  ? std::numeric_limits<T>::max()
                                  : std::numeric_limits<T>::lowest();
  for (size_t i = 0; i < n; ++i) {
    switch (op) {
      case ReduceOp::kSum:
        acc = static_cast<T>(acc + x[i]);
        break;
      case ReduceOp::kProd:
        acc = static_cast<T>(acc * x[i]);
        break;
      case ReduceOp::kMin:
        acc = std::min(acc, x[i]);
        break;
      case ReduceOp::kMax:
        acc = std::max(acc, x[i]);
        break;
    }
  }
  *out = acc;
}

}  // namespace

Result<std::shared_ptr<StreamCore>> SimKernels::Core(Stream& stream) {
  auto core = CoreOf(stream);
  if (!core) return Status::InvalidArgument("a sim kernel was given a stream of another backend");
  return core;
}

Status SimKernels::Fill(Stream& stream, DType dtype, void* x, size_t n, double value) {
  PRISM_ASSIGN_OR_RETURN(auto core, Core(stream));
  size_t bytes = n * DTypeSize(dtype);
  return backend_->Enqueue(core, {{x, bytes, true}}, true, backend_->KernelNs(core->device, bytes),
                           [=] {
                             for (size_t i = 0; i < n; ++i) Store(dtype, x, i, value);
                           });
}

Status SimKernels::Axpy(Stream& stream, DType dtype, size_t n, double a, const void* x, void* y) {
  PRISM_ASSIGN_OR_RETURN(auto core, Core(stream));
  size_t bytes = n * DTypeSize(dtype);
  std::vector<SimBackend::Access> acc{{y, bytes, true}};
  if (x) acc.push_back({x, bytes, false});
  return backend_->Enqueue(core, acc, true, backend_->KernelNs(core->device, bytes * (x ? 3 : 2)),
                           [=] {
                             for (size_t i = 0; i < n; ++i) {
                               double yi = Load(dtype, y, i);
                               Store(dtype, y, i, x ? a * Load(dtype, x, i) + yi : a * yi);
                             }
                           });
}

Status SimKernels::Reduce(Stream& stream, DType dtype, ReduceOp op, const void* x, size_t n,
                          void* out) {
  PRISM_ASSIGN_OR_RETURN(auto core, Core(stream));
  size_t size = DTypeSize(dtype);
  return backend_->Enqueue(
      core, {{x, n * size, false}, {out, size, true}}, true,
      backend_->KernelNs(core->device, n * size), [=] {
        if (dtype == DType::kInt32) {
          ReduceInt(op, static_cast<const int32_t*>(x), n, static_cast<int32_t*>(out));
        } else if (dtype == DType::kInt64) {
          ReduceInt(op, static_cast<const int64_t*>(x), n, static_cast<int64_t*>(out));
        } else {
          double acc = op == ReduceOp::kSum    ? 0
                       : op == ReduceOp::kProd ? 1
                       : op == ReduceOp::kMin  ? INFINITY
                                               : -INFINITY;
          for (size_t i = 0; i < n; ++i) {
            double v = Load(dtype, x, i);
            switch (op) {
              case ReduceOp::kSum:
                acc += v;
                break;
              case ReduceOp::kProd:
                acc *= v;
                break;
              case ReduceOp::kMin:
                acc = std::fmin(acc, v);
                break;
              case ReduceOp::kMax:
                acc = std::fmax(acc, v);
                break;
            }
          }
          Store(dtype, out, 0, acc);
        }
      });
}

Status SimKernels::Gemm(Stream& stream, DType dtype, size_t m, size_t n, size_t k, double alpha,
                        const void* a, const void* b, double beta, void* c) {
  PRISM_ASSIGN_OR_RETURN(auto core, Core(stream));
  size_t size = DTypeSize(dtype);
  return backend_->Enqueue(
      core, {{a, m * k * size, false}, {b, k * n * size, false}, {c, m * n * size, true}}, true,
      backend_->KernelNs(core->device, (m * k + k * n + 2 * m * n) * size, 2.0 * m * n * k), [=] {
        // Blocked over rows and the inner dimension, accumulating in double.
        constexpr size_t kBlock = 64;
        std::vector<double> acc(n);
        for (size_t i = 0; i < m; ++i) {
          std::fill(acc.begin(), acc.end(), 0.0);
          for (size_t p0 = 0; p0 < k; p0 += kBlock) {
            size_t p1 = std::min(k, p0 + kBlock);
            for (size_t p = p0; p < p1; ++p) {
              double av = Load(dtype, a, i * k + p);
              for (size_t j = 0; j < n; ++j) acc[j] += av * Load(dtype, b, p * n + j);
            }
          }
          for (size_t j = 0; j < n; ++j) {
            double old = beta == 0 ? 0 : Load(dtype, c, i * n + j);
            Store(dtype, c, i * n + j, alpha * acc[j] + beta * old);
          }
        }
      });
}

Status SimKernels::Trap(Stream& stream) {
  PRISM_ASSIGN_OR_RETURN(auto core, Core(stream));
  int device = core->device;
  SimBackend* backend = backend_;
  return backend_->Enqueue(core, {}, true, backend_->KernelNs(device, 0), [backend, device] {
    backend->Fault(device, "an illegal memory access in a kernel (a trap)");
  });
}

}  // namespace prism::gpu::sim

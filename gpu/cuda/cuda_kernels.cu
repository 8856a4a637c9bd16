#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cuda/std/limits>
#include <type_traits>

#include "gpu/cuda/cuda_kernels.h"

namespace prism::gpu::cuda {
namespace {

template <typename T>
__device__ double Widen(T v) {
  return static_cast<double>(v);
}
template <>
__device__ double Widen(__half v) {
  return __half2float(v);
}
template <>
__device__ double Widen(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ T Narrow(double v) {
  return static_cast<T>(v);
}
template <>
__device__ __half Narrow(double v) {
  return __float2half_rn(static_cast<float>(v));
}
template <>
__device__ __nv_bfloat16 Narrow(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}

template <typename T>
__global__ void FillKernel(T* x, size_t n, double value) {
  T v = Narrow<T>(value);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    x[i] = v;
}

template <typename T>
__global__ void AxpyKernel(size_t n, double a, const T* x, T* y) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    double yi = Widen(y[i]);
    y[i] = Narrow<T>(x ? a * Widen(x[i]) + yi : a * yi);
  }
}

// Integers accumulate exactly in their own type, floats in double. One block: the op library's
// reductions are for tests and small results, not a tuned primitive.
template <typename T>
struct Acc {
  using type = double;
};
template <>
struct Acc<int32_t> {
  using type = int32_t;
};
template <>
struct Acc<int64_t> {
  using type = int64_t;
};
template <>
struct Acc<uint8_t> {
  using type = int64_t;
};

template <typename A>
__device__ A Identity(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return A(0);
    case ReduceOp::kProd:
      return A(1);
    case ReduceOp::kMin:
      return ::cuda::std::numeric_limits<A>::max();
    default:
      return ::cuda::std::numeric_limits<A>::lowest();
  }
}
template <typename A>
__device__ A Combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::kSum:
      return a + b;
    case ReduceOp::kProd:
      return a * b;
    case ReduceOp::kMin:
      return b < a ? b : a;
    default:
      return b > a ? b : a;
  }
}

template <typename T>
__global__ void ReduceKernel(ReduceOp op, const T* x, size_t n, T* out) {
  using A = typename Acc<T>::type;
  __shared__ A partial[1024];
  A acc = Identity<A>(op);
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
    A v;
    if constexpr (std::is_same_v<A, double>)
      v = Widen(x[i]);
    else
      v = static_cast<A>(x[i]);
    acc = Combine(op, acc, v);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      partial[threadIdx.x] = Combine(op, partial[threadIdx.x], partial[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if constexpr (std::is_same_v<A, double>)
      *out = Narrow<T>(partial[0]);
    else
      *out = static_cast<T>(partial[0]);
  }
}

__global__ void TrapKernel() { __trap(); }

unsigned Blocks(size_t n) {
  size_t b = (n + 255) / 256;
  return static_cast<unsigned>(b < 4096 ? (b == 0 ? 1 : b) : 4096);
}

template <typename F>
cudaError_t Dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16:
      return f(__half{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kInt32:
      return f(int32_t{});
    case DType::kInt64:
      return f(int64_t{});
    case DType::kUInt8:
      return f(uint8_t{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchFill(cudaStream_t s, DType dtype, void* x, size_t n, double value) {
  return Dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    FillKernel<T><<<Blocks(n), 256, 0, s>>>(static_cast<T*>(x), n, value);
    return cudaGetLastError();
  });
}

cudaError_t LaunchAxpy(cudaStream_t s, DType dtype, size_t n, double a, const void* x, void* y) {
  return Dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    AxpyKernel<T><<<Blocks(n), 256, 0, s>>>(n, a, static_cast<const T*>(x), static_cast<T*>(y));
    return cudaGetLastError();
  });
}

cudaError_t LaunchReduce(cudaStream_t s, DType dtype, ReduceOp op, const void* x, size_t n,
                         void* out) {
  return Dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    ReduceKernel<T><<<1, 1024, 0, s>>>(op, static_cast<const T*>(x), n, static_cast<T*>(out));
    return cudaGetLastError();
  });
}

cudaError_t LaunchTrap(cudaStream_t s) {
  TrapKernel<<<1, 1, 0, s>>>();
  return cudaGetLastError();
}

}  // namespace prism::gpu::cuda

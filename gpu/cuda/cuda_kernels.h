// The op library's CUDA kernels (cuda_kernels.cu), launched on a stream.
#pragma once

#include <cuda_runtime.h>
#include <prism/gpu/backend.h>

namespace prism::gpu::cuda {

cudaError_t LaunchFill(cudaStream_t s, DType dtype, void* x, size_t n, double value);
cudaError_t LaunchAxpy(cudaStream_t s, DType dtype, size_t n, double a, const void* x, void* y);
cudaError_t LaunchReduce(cudaStream_t s, DType dtype, ReduceOp op, const void* x, size_t n,
                         void* out);
cudaError_t LaunchTrap(cudaStream_t s);

}  // namespace prism::gpu::cuda

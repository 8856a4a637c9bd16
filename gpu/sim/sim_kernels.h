// The op library's kernels on sim devices: host loops that run on the stream's thread, with the
// buffers they touch declared so that the sim checks them like any other device work.
#pragma once

#include "gpu/sim/sim_backend.h"

namespace prism::gpu::sim {

class SimKernels final : public Kernels {
 public:
  explicit SimKernels(SimBackend* backend) : backend_(backend) {}
  Status Fill(Stream& stream, DType dtype, void* x, size_t n, double value) override;
  Status Axpy(Stream& stream, DType dtype, size_t n, double a, const void* x, void* y) override;
  Status Reduce(Stream& stream, DType dtype, ReduceOp op, const void* x, size_t n,
                void* out) override;
  Status Gemm(Stream& stream, DType dtype, size_t m, size_t n, size_t k, double alpha,
              const void* a, const void* b, double beta, void* c) override;
  Status Trap(Stream& stream) override;

 private:
  Result<std::shared_ptr<StreamCore>> Core(Stream& stream);
  SimBackend* backend_;
};

}  // namespace prism::gpu::sim

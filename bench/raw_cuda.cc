// Built only where the CUDA toolkit is (PRISM_BENCH_HAVE_CUDA).
#include "bench/raw_cuda.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

double RawCudaCopySeconds(RawCopyKind kind, size_t bytes, int reps) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return 0;
  void *dev_a = nullptr, *dev_b = nullptr;
  void* host = std::malloc(bytes);
  if (cudaMalloc(&dev_a, bytes) != cudaSuccess || cudaMalloc(&dev_b, bytes) != cudaSuccess || !host)
    return 0;
  // Data in every page, as in prism's run: untouched pages all map the one zero page, which
  // reads from cache and would flatter the raw host->device copy.
  for (size_t i = 0; i < bytes; ++i)
    static_cast<unsigned char*>(host)[i] = static_cast<unsigned char>(i * 131 + 7);
  cudaStream_t s;
  cudaStreamCreate(&s);
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  auto copy = [&] {
    switch (kind) {
      case RawCopyKind::kHostToDevice:
        cudaMemcpyAsync(dev_a, host, bytes, cudaMemcpyHostToDevice, s);
        break;
      case RawCopyKind::kDeviceToDevice:
        cudaMemcpyAsync(dev_b, dev_a, bytes, cudaMemcpyDeviceToDevice, s);
        break;
      case RawCopyKind::kDeviceToHost:
        cudaMemcpyAsync(host, dev_a, bytes, cudaMemcpyDeviceToHost, s);
        break;
    }
  };
  copy();
  cudaStreamSynchronize(s);
  cudaEventRecord(start, s);
  for (int i = 0; i < reps; ++i) copy();
  cudaEventRecord(end, s);
  cudaEventSynchronize(end);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, end);
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  cudaStreamDestroy(s);
  cudaFree(dev_a);
  cudaFree(dev_b);
  std::free(host);
  return ms / 1e3 / reps;
}

// The raw floor of the chain benchmark: the same 100 dependent steps (two one-thread kernels each,
// alternating between two streams) written directly against the CUDA runtime, ordered by events
// or by a host synchronization after each step. What prism's chain is compared with.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>

#include "bench/raw_cuda.h"

namespace {

__global__ void ScaleOne(float* x, float a) { *x *= a; }
__global__ void FillOne(float* x, float v) { *x = v; }

bool Ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "raw chain: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

}  // namespace

RawChainSeconds RawCudaChain(int length) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0 || length < 1) return {};
  cudaStream_t s[2];
  float* x = nullptr;
  if (!Ok(cudaStreamCreateWithFlags(&s[0], cudaStreamNonBlocking), "stream") ||
      !Ok(cudaStreamCreateWithFlags(&s[1], cudaStreamNonBlocking), "stream") ||
      !Ok(cudaMalloc(&x, 4), "malloc")) {
    return {};
  }
  cudaEvent_t* ev = new cudaEvent_t[length];
  for (int i = 0; i < length; ++i) cudaEventCreateWithFlags(&ev[i], cudaEventDisableTiming);
  auto run = [&](bool host_sync) -> double {
    FillOne<<<1, 1, 0, s[0]>>>(x, 0);
    cudaStreamSynchronize(s[0]);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < length; ++i) {
      cudaStream_t on = s[i % 2], prev = s[(i + 1) % 2];
      if (host_sync) {
        cudaStreamSynchronize(prev);
      } else if (i > 0) {
        cudaStreamWaitEvent(on, ev[i - 1], 0);
      }
      ScaleOne<<<1, 1, 0, on>>>(x, 2);
      FillOne<<<1, 1, 0, on>>>(x, static_cast<float>(i + 1));
      cudaEventRecord(ev[i], on);
    }
    cudaEventSynchronize(ev[length - 1]);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    float got = 0;
    cudaMemcpy(&got, x, 4, cudaMemcpyDeviceToHost);
    if (!Ok(cudaGetLastError(), "chain") || got != static_cast<float>(length)) return -1;
    return sec;
  };
  run(false);  // warm-up: module load, first launches
  RawChainSeconds r{run(false), run(true)};
  for (int i = 0; i < length; ++i) cudaEventDestroy(ev[i]);
  delete[] ev;
  cudaFree(x);
  cudaStreamDestroy(s[0]);
  cudaStreamDestroy(s[1]);
  return r;
}

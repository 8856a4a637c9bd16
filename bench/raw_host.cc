#include <chrono>
#include <cstring>
#include <vector>

#include "bench/raw_cuda.h"

double RawHostCopySeconds(size_t bytes, int reps) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  std::memcpy(b.data(), a.data(), bytes);  // warm-up (and page-in)
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i)
    std::memcpy(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(), bytes);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

#ifndef PRISM_BENCH_HAVE_CUDA
double RawCudaCopySeconds(RawCopyKind, size_t, int) { return 0; }
RawChainSeconds RawCudaChain(int) { return {}; }
#endif

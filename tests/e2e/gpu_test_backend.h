// Which device backend an end-to-end GPU suite runs on. By default the suites run on simulated
// devices of a shipped topology profile (label e2e). With PRISM_TEST_GPU_BACKEND=cuda they run on
// the real GPUs of the machine (label gpu): the driver's topology, real memory pools, real IPC;
// the fixture skips, saying why, where there is no CUDA device, and a test that needs more GPUs
// than the machine has skips too.
#pragma once

#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include <cstdlib>
#include <string>

namespace prism_test {

inline bool OnCuda() {
  const char* v = std::getenv("PRISM_TEST_GPU_BACKEND");
  return v != nullptr && std::string(v) == "cuda";
}

// The number of CUDA devices this process sees, or the reason there are none.
inline int CudaDeviceCount(std::string* why) {
  prism::gpu::BackendConfig config;
  config.kind = "cuda";
  auto backend = prism::gpu::CreateBackend(config);
  if (!backend.ok()) {
    *why = backend.status().ToString();
    return 0;
  }
  int n = (*backend)->device_count();
  if (n == 0) *why = "the cuda backend sees no device";
  return n;
}

// Initializes prism for a GPU suite: sim with `profile` (and `sim_memory` per device), or the
// real devices under PRISM_TEST_GPU_BACKEND=cuda. Returns false (after GTEST_SKIP) where the
// real backend has no device or fewer than `min_gpus`.
#define PRISM_INIT_GPU_SUITE(options, profile, sim_memory, min_gpus)                \
  do {                                                                              \
    prism::InitOptions prism_opts_ = (options);                                     \
    if (prism_test::OnCuda()) {                                                     \
      std::string why_;                                                             \
      int n_ = prism_test::CudaDeviceCount(&why_);                                  \
      if (n_ == 0) GTEST_SKIP() << "no CUDA device: " << why_;                      \
      if (n_ < (min_gpus))                                                          \
        GTEST_SKIP() << "needs " << (min_gpus) << " GPUs, this machine has " << n_; \
      setenv("PRISM_GPU_BACKEND", "cuda", 1);                                       \
    } else {                                                                        \
      setenv("PRISM_GPU_BACKEND", "sim", 1);                                        \
      setenv("PRISM_SIM_DEVICE_MEMORY", (sim_memory), 1);                           \
      prism_opts_.gpu_topology = (profile);                                         \
    }                                                                               \
    prism::Init(prism_opts_);                                                       \
  } while (0)

inline void ShutdownGpuSuite() {
  if (prism::IsInitialized()) prism::Shutdown();
  unsetenv("PRISM_GPU_BACKEND");
  unsetenv("PRISM_SIM_DEVICE_MEMORY");
}

}  // namespace prism_test

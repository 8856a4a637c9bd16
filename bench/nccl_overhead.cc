// Per-call overhead of prism's nccl allreduce over a raw ncclAllReduce on the same communicator,
// buffers and stream (a 1-rank group on one GPU, so the figure is prism's own cost per call):
// host time to queue N calls, and to their end. Target: <= 5 us per call.
#include <cuda_runtime.h>
#include <nccl.h>
#include <prism/collective.h>
#include <prism/prism.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

extern "C" void* prism_nccl_comm(prism::collective::Group* group);

namespace {
using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

int main() {
  namespace col = prism::collective;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("nccl_overhead: no GPU here\n");
    return 1;
  }
  prism::Init({.num_cpus = 1});
  col::Group& g = col::InitGroup("overhead", 1, 0, col::Backend::kNccl);
  auto comm = static_cast<ncclComm_t>(prism_nccl_comm(&g));
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  float* buf = nullptr;
  cudaMalloc(&buf, 1 << 20);
  std::vector<float> host(256, 1.5f);
  cudaMemcpy(buf, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  // prism::gpu::Stream over the same cudaStream_t: the backend's wrapper of a framework stream.
  auto backend = prism::gpu::CreateBackend({.kind = "cuda"});
  if (!backend.ok()) {
    std::printf("nccl_overhead: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  auto stream = (*backend)->WrapStream(0, reinterpret_cast<uintptr_t>(s)).value();
  const int n = 2000;
  std::printf(
      "# prism nccl per-call overhead: 1-rank group, %d allreduce calls of 8 floats, same buffers "
      "and stream\n",
      n);
  std::printf("%-8s %14s %14s %14s %14s\n", "round", "prism us/call", "raw us/call", "overhead us",
              "to the end x");
  std::vector<double> overheads;
  for (int round = 0; round < 5; ++round) {
    cudaStreamSynchronize(s);
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i)
      g.AllReduce(buf, buf, 8, col::DType::kFloat32, col::ReduceOp::kSum, stream.get());
    double prism_queue = Seconds(Clock::now() - t0);
    cudaStreamSynchronize(s);
    double prism_end = Seconds(Clock::now() - t0);
    t0 = Clock::now();
    for (int i = 0; i < n; ++i) ncclAllReduce(buf, buf, 8, ncclFloat32, ncclSum, comm, s);
    double raw_queue = Seconds(Clock::now() - t0);
    cudaStreamSynchronize(s);
    double raw_end = Seconds(Clock::now() - t0);
    double overhead = (prism_queue - raw_queue) / n * 1e6;
    overheads.push_back(overhead);
    std::printf("%-8d %14.2f %14.2f %14.2f %14.2f\n", round, prism_queue / n * 1e6,
                raw_queue / n * 1e6, overhead, prism_end / raw_end);
  }
  cudaMemcpy(host.data(), buf, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
  bool ok = std::all_of(host.begin(), host.end(),
                        [](float v) { return v == 1.5f; });  // one rank: unchanged
  std::sort(overheads.begin(), overheads.end());
  std::printf("median overhead %.2f us per call (target <= 5 us); results %s\n", overheads[2],
              ok ? "ok" : "WRONG");
  col::DestroyGroup("overhead");
  prism::Shutdown();
  return ok ? 0 : 1;
}

// A tour of the GPU layer: a GPU task with a memory cap, a k-GPU placement, a placement group
// that demands NVLink, and a timeline for Perfetto. Runs anywhere: without a GPU, simulate one
// (PRISM_GPU_BACKEND=sim ./gpu_tour).
#include <prism/gpu.h>
#include <prism/prism.h>

#include <iostream>

namespace gpu = prism::gpu;

// Sums n twos on the task's GPU: its context is its device, a stream of its worker's pool and
// that device's memory (capped by gpu_memory).
double SumOfTwos(int n) {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::DeviceBuffer x = ctx.Allocate(n * sizeof(double)).value();
  gpu::DeviceBuffer out = ctx.Allocate(sizeof(double)).value();
  gpu::DeviceArray a{x.data(), gpu::DType::kFloat64, static_cast<size_t>(n), ctx.device()};
  prism::Status st = gpu::ops::Fill(ctx.backend(), ctx.stream(), a, 2.0);
  if (st.ok()) {
    st = gpu::ops::Reduce(ctx.backend(), ctx.stream(), gpu::ReduceOp::kSum, a,
                          {out.data(), gpu::DType::kFloat64, 1, ctx.device()});
  }
  double host = 0;
  if (st.ok()) st = ctx.stream().CopyAsync(&host, out.data(), sizeof host);
  if (st.ok()) st = ctx.stream().Synchronize();
  if (!st.ok()) throw std::runtime_error(st.ToString());
  return host;
}
std::vector<int> Ids() { return prism::GetGpuIds(); }
PRISM_REMOTE(SumOfTwos, Ids);

int main(int argc, char** argv) {
  std::string trace = argc > 1 ? argv[1] : "prism-gpu-tour.json";
  prism::Init({.gpu_topology = "nvlink-pairs-4", .timeline = true});
  std::cout
      << prism::Get(
             prism::Task(SumOfTwos).Options({.num_gpus = 0.5, .gpu_memory = 64 << 20}).Remote(1000))
      << "\n";
  auto pair = prism::Get(prism::Task(Ids).Options({.num_gpus = 2}).Remote());  // an NVLink pair
  std::cout << "GPUs " << pair[0] << "," << pair[1] << "\n";
  try {
    prism::CreatePlacementGroup(
        {.bundles = {{{"GPU", 1}}, {{"GPU", 1}}, {{"GPU", 1}}}, .require_nvlink = true});
  } catch (const prism::InfeasibleError& e) {
    std::cout << "no 3 GPUs here are all on NVLink\n";
  }
  prism::WriteTimeline(trace);  // open it in https://ui.perfetto.dev
  prism::Shutdown();
}

// NVTX ranges around task execution, transfers and allocations, recorded by an NVTX injection
// library (what Nsight Systems would show) in the driver and in its workers.
#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

double GpuCopy(int n) {
  prism::gpu::Context& ctx = prism::gpu::CurrentContext();
  auto buffer = ctx.Allocate(n * sizeof(double));
  if (!buffer.ok()) throw std::runtime_error(buffer.status().ToString());
  std::vector<double> host(n, 2.5), back(n);
  if (!ctx.stream().CopyAsync(buffer->data(), host.data(), n * sizeof(double)).ok() ||
      !ctx.stream().CopyAsync(back.data(), buffer->data(), n * sizeof(double)).ok() ||
      !ctx.stream().Synchronize().ok()) {
    throw std::runtime_error("copy failed");
  }
  return back[n - 1];
}
int Plain(int x) { return x + 1; }
PRISM_REMOTE(GpuCopy, Plain);

TEST(NvtxChild, RunsTasks) {
  if (!std::getenv("PRISM_NVTX_RECORD")) GTEST_SKIP() << "run by NvtxTest";
  prism::Init({.num_cpus = 2, .gpu_topology = "nvlink-pairs-4"});
  EXPECT_EQ(prism::Get(prism::Task(GpuCopy).Options({.num_gpus = 1}).Remote(1024)), 2.5);
  EXPECT_EQ(prism::Get(prism::Task(Plain).Remote(1)), 2);
  prism::Shutdown();
}

TEST(NvtxTest, TasksTransfersAndAllocationsAreRanges) {
  if (!prism::gpu::NvtxEnabled()) GTEST_SKIP() << "built without the NVTX headers";
  std::string record = ::testing::TempDir() + "/nvtx-" + std::to_string(getpid()) + ".txt";
  std::remove(record.c_str());
  std::vector<std::string> env{"NVTX_INJECTION64_PATH=" PRISM_NVTX_RECORDER,
                               "PRISM_NVTX_RECORD=" + record, "PRISM_GPU_BACKEND=sim",
                               "PRISM_SIM_DEVICE_MEMORY=64M"};
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=NvtxChild.*";
  char* argv[] = {const_cast<char*>("/proc/self/exe"), filter.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ifstream in(record);
  std::map<std::string, int> depth;  // per process: pushes less pops
  std::map<std::string, int> seen;
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    std::string who, op;
    l >> who >> op;
    if (op == "push") {
      ++depth[who];
      std::string message;
      std::getline(l, message);
      for (const char* what : {" prism task GpuCopy", " prism task Plain", " prism copy",
                               " prism alloc", " prism free"}) {
        if (message.rfind(what, 0) == 0) ++seen[what];
      }
    } else if (op == "pop") {
      --depth[who];
    }
  }
  EXPECT_EQ(seen[" prism task GpuCopy"], 1);
  EXPECT_EQ(seen[" prism task Plain"], 1);
  EXPECT_EQ(seen[" prism copy"], 2) << "two transfers in the GPU task";
  EXPECT_GE(seen[" prism alloc"], 1);
  EXPECT_GE(seen[" prism free"], 1);
  for (const auto& [who, d] : depth) EXPECT_EQ(d, 0) << "process " << who << " left ranges open";
  EXPECT_GE(depth.size(), 2u) << "ranges from the workers' processes";
  std::remove(record.c_str());
}

}  // namespace

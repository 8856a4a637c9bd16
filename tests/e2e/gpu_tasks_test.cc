// GPU tasks and actors on simulated devices: each gets a context (its device, a stream of its
// worker's pool, memory capped by gpu_memory); a faulting kernel takes its worker down and the
// task is retried in a fresh one.
#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "e2e/gpu_test_backend.h"

namespace {

using namespace std::chrono_literals;
namespace gpu = prism::gpu;

template <typename T>
T Check(prism::Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  return std::move(r).value();
}
void Check(const prism::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

// Sum of 1..n on the task's GPU.
double GpuSum(int n) {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::DeviceBuffer ones = Check(ctx.Allocate(n * sizeof(double)));
  gpu::DeviceBuffer out = Check(ctx.Allocate(sizeof(double)));
  gpu::DeviceArray x{ones.data(), gpu::DType::kFloat64, static_cast<size_t>(n), ctx.device()};
  Check(gpu::ops::Fill(ctx.backend(), ctx.stream(), x, 1));
  Check(gpu::ops::Scale(ctx.backend(), ctx.stream(), 2, x));
  Check(gpu::ops::Reduce(ctx.backend(), ctx.stream(), gpu::ReduceOp::kSum, x,
                         {out.data(), gpu::DType::kFloat64, 1, ctx.device()}));
  double host = 0;
  Check(ctx.stream().CopyAsync(&host, out.data(), sizeof host));
  Check(ctx.stream().Synchronize());
  return host;
}
std::string StreamName() { return gpu::CurrentContext().stream().name(); }
// Allocates `bytes` on the task's GPU and says how it went.
std::string TryAllocate(int64_t bytes) {
  auto b = gpu::CurrentContext().Allocate(static_cast<size_t>(bytes));
  return b.ok() ? "ok" : b.status().ToString();
}
std::string ContextOutsideGpuTask() {
  try {
    gpu::CurrentContext();
    return "no error";
  } catch (const prism::RuntimeError& e) {
    return e.what();
  }
}
// Faults (a trapping kernel) while `marker` does not exist yet, creating it: the first attempt
// dies, the retry runs in a fresh worker.
int TrapOnce(std::string marker) {
  if (std::ifstream(marker).good()) return getpid();
  std::ofstream(marker) << getpid();
  gpu::Context& ctx = gpu::CurrentContext();
  Check(ctx.backend().kernels().Trap(ctx.stream()));
  (void)ctx.stream().Synchronize();
  return -1;  // not reached: the worker exits after a fault
}
// Waits `ms` on the host (as a task waiting for its stream would) and says where and when it ran.
std::vector<std::string> Nap(int ms) {
  auto now_us = [] {
    return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
  };
  std::string start = now_us();
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return {std::to_string(getpid()), start, now_us(), gpu::CurrentContext().stream().name()};
}
PRISM_REMOTE(GpuSum, StreamName, TryAllocate, ContextOutsideGpuTask, TrapOnce, Nap);

// A GPU actor: its context (and a device buffer in its state) lasts across calls.
class Accumulator {
 public:
  Accumulator() {
    gpu::Context& ctx = gpu::CurrentContext();
    buffer_ = Check(ctx.Allocate(1024 * sizeof(float)));
    Check(gpu::ops::Fill(ctx.backend(), ctx.stream(), Array(), 0));
  }
  float Add(float v) {
    gpu::Context& ctx = gpu::CurrentContext();
    gpu::DeviceBuffer ones = Check(ctx.Allocate(1024 * sizeof(float)));
    gpu::DeviceArray o{ones.data(), gpu::DType::kFloat32, 1024, ctx.device()};
    Check(gpu::ops::Fill(ctx.backend(), ctx.stream(), o, 1));
    Check(gpu::ops::Axpy(ctx.backend(), ctx.stream(), v, o, Array()));
    float first = 0;
    Check(ctx.stream().CopyAsync(&first, buffer_.data(), sizeof first));
    Check(ctx.stream().Synchronize());
    return first;
  }

 private:
  gpu::DeviceArray Array() {
    return {buffer_.data(), gpu::DType::kFloat32, 1024, gpu::CurrentContext().device()};
  }
  gpu::DeviceBuffer buffer_;
};
Accumulator* MakeAccumulator() { return new Accumulator(); }
PRISM_REMOTE(MakeAccumulator, &Accumulator::Add);

class GpuTasksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PRISM_INIT_GPU_SUITE((prism::InitOptions{.num_cpus = 4}), "h100-sxm-8", "64M", 1);
  }
  void TearDown() override { prism_test::ShutdownGpuSuite(); }
};

TEST_F(GpuTasksTest, AGpuTaskComputesOnItsDevice) {
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(GpuSum).Options({.num_gpus = 1}).Remote(1000)), 2000.0);
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(GpuSum).Options({.num_gpus = 0.25}).Remote(10)), 20.0);
  EXPECT_NE(prism::Get(prism::Task(ContextOutsideGpuTask).Remote()).find("num_gpus"),
            std::string::npos);
}

TEST_F(GpuTasksTest, TasksOfOneWorkerTakeTurnsOnItsStreams) {
  std::set<std::string> names;
  for (int i = 0; i < 8; ++i)
    names.insert(prism::Get(prism::Task(StreamName).Options({.num_gpus = 1}).Remote()));
  EXPECT_GE(names.size(), 2u) << "consecutive tasks go on different streams of the pool";
  for (const auto& n : names) EXPECT_EQ(n.rfind("prism gpu0 stream ", 0), 0u) << n;
}

// Tasks that take every GPU of the node queue on one worker's lease; while one waits, the next
// starts on another stream of the pool (up to its 4 streams), not after it.
TEST_F(GpuTasksTest, StatelessGpuTasksOfOneWorkerRunSideBySide) {
  int gpus = static_cast<int>(prism::ClusterResources()["GPU"]);
  std::vector<prism::ObjectRef<std::vector<std::string>>> naps;
  for (int i = 0; i < 4; ++i)
    naps.push_back(prism::Task(Nap).Options({.num_gpus = double(gpus)}).Remote(400));
  std::set<std::string> pids, streams;
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (auto& r : naps) {
    auto v = prism::Get(r, 30s);
    pids.insert(v[0]);
    streams.insert(v[3]);
    spans.emplace_back(std::stoll(v[1]), std::stoll(v[2]));
  }
  int most = 0;  // the most tasks running at one moment
  for (auto& [start, end] : spans) {
    int at = 0;
    for (auto& [s, e] : spans) at += s <= start && start < e;
    most = std::max(most, at);
  }
  EXPECT_EQ(pids.size(), 1u) << "one worker holds all the GPUs";
  EXPECT_GE(most, 2) << "tasks of one worker overlapped";
  EXPECT_LE(most, 4) << "at most one per stream of the pool";
  EXPECT_GE(streams.size(), 2u);
}

TEST_F(GpuTasksTest, GpuMemoryCapsATaskAndOnlyThatTask) {
  std::string over = prism::Get(
      prism::Task(TryAllocate).Options({.num_gpus = 0.5, .gpu_memory = 1 << 20}).Remote(2 << 20));
  EXPECT_NE(over.find("OutOfMemory"), std::string::npos) << over;
  EXPECT_NE(over.find("gpu_memory"), std::string::npos) << over;
  EXPECT_EQ(prism::Get(prism::Task(TryAllocate)
                           .Options({.num_gpus = 0.5, .gpu_memory = 4 << 20})
                           .Remote(2 << 20)),
            "ok");
  EXPECT_EQ(prism::Get(prism::Task(TryAllocate).Options({.num_gpus = 0.5}).Remote(2 << 20)), "ok")
      << "the next task on the same worker has its own cap";
  EXPECT_THROW(prism::Task(TryAllocate).Options({.gpu_memory = 1 << 20}).Remote(1),
               prism::InvalidArgumentError)
      << "gpu_memory without num_gpus";
}

TEST_F(GpuTasksTest, AGpuActorKeepsItsContextAndDeviceState) {
  auto acc = prism::Actor(MakeAccumulator).Options({.num_gpus = 1}).Remote();
  EXPECT_FLOAT_EQ(prism::Get(acc.Task(&Accumulator::Add).Remote(1.5f)), 1.5f);
  EXPECT_FLOAT_EQ(prism::Get(acc.Task(&Accumulator::Add).Remote(2.0f)), 3.5f);
  EXPECT_FLOAT_EQ(prism::Get(acc.Task(&Accumulator::Add).Remote(-0.5f)), 3.0f);
}

TEST_F(GpuTasksTest, AFaultingKernelTakesDownItsWorkerOnlyAndTheTaskIsRetried) {
  std::string marker = ::testing::TempDir() + "/prism-trap-" + std::to_string(getpid());
  std::remove(marker.c_str());
  // Halves of GPUs, so that the check runs on a one-GPU machine too: a fault stays in its process.
  auto other = prism::Actor(MakeAccumulator).Options({.num_gpus = 0.5}).Remote();
  EXPECT_FLOAT_EQ(prism::Get(other.Task(&Accumulator::Add).Remote(1.0f)), 1.0f);
  int pid = prism::Get(
      prism::Task(TrapOnce).Options({.num_gpus = 0.5, .max_retries = 1}).Remote(marker), 60s);
  int first = 0;
  std::ifstream(marker) >> first;
  EXPECT_GT(pid, 0);
  EXPECT_NE(pid, first) << "the retry ran in a fresh worker";
  EXPECT_NE(::kill(first, 0), 0) << "the faulted worker is gone";
  EXPECT_FLOAT_EQ(prism::Get(other.Task(&Accumulator::Add).Remote(1.0f)), 2.0f)
      << "other GPU workers live on";
  std::remove(marker.c_str());
  std::string marker2 = marker + "-always";
  // Without retries left, the caller learns the worker died.
  std::ofstream(marker2 + "x");
  EXPECT_THROW(
      prism::Get(prism::Task(TrapOnce).Options({.num_gpus = 0.5, .max_retries = 0}).Remote(marker2),
                 60s),
      prism::WorkerCrashedError);
  std::remove(marker2.c_str());
  std::remove((marker2 + "x").c_str());
}

}  // namespace

// Device objects: a GPU task returns a gpu::Tensor, which stays in device memory and is handed to
// the next task by ObjectRef: the same memory in the same process, an IPC mapping in another
// process of the node, ordered by events, never copied through the host.
#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "e2e/gpu_test_backend.h"
#include "gpu/counting_backend.h"
#include "worker/core_worker.h"

namespace {

using namespace std::chrono_literals;
namespace gpu = prism::gpu;

void Check(const prism::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

gpu::Tensor Ones(int n) {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::Tensor t = gpu::Tensor::Empty(ctx, gpu::DType::kFloat32, {n}).value();
  Check(gpu::ops::Fill(ctx.backend(), ctx.stream(), t.array(), 1));
  return t;  // no sync: whoever uses it waits for this stream's work on an event
}
gpu::Tensor Double(gpu::Tensor x) {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::Tensor y = gpu::Tensor::Empty(ctx, x.dtype(), x.shape()).value();
  Check(gpu::ops::Copy(ctx.backend(), ctx.stream(), y.array(), x.array()));
  Check(gpu::ops::Scale(ctx.backend(), ctx.stream(), 2, y.array()));
  return y;
}
double Sum(gpu::Tensor x) {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::Tensor out = gpu::Tensor::Empty(ctx, gpu::DType::kFloat32, {1}).value();
  Check(gpu::ops::Reduce(ctx.backend(), ctx.stream(), gpu::ReduceOp::kSum, x.array(), out.array()));
  float host = 0;
  Check(ctx.stream().CopyAsync(&host, out.data(), sizeof host));
  Check(ctx.stream().Synchronize());
  return host;
}
int Pid() { return getpid(); }
// Elements 4..7 of a tensor of 0..7, as a DLPack view into the middle of it (memory prism did
// not allocate as such): passed on as a copy.
gpu::Tensor Middle() {
  gpu::Context& ctx = gpu::CurrentContext();
  gpu::Tensor all = gpu::Tensor::Empty(ctx, gpu::DType::kFloat32, {8}).value();
  std::vector<float> host{0, 1, 2, 3, 4, 5, 6, 7};
  Check(ctx.stream().CopyAsync(all.data(), host.data(), 32));
  DLManagedTensorVersioned* view = all.ToDLPack(ctx.backend()).value();
  view->dl_tensor.byte_offset = 16;
  view->dl_tensor.shape[0] = 4;
  gpu::Tensor middle =
      gpu::Tensor::FromDLPack(view, ctx.backend(), ctx.memory(), ctx.stream()).value();
  Check(ctx.stream().Synchronize());  // (host goes now)
  return middle;
}
// Ones, with the producing worker's pid written to `marker`.
gpu::Tensor OnesHere(int n, std::string marker) {
  std::ofstream(marker) << getpid();
  return Ones(n);
}
PRISM_REMOTE(Ones, Double, Sum, Pid, Middle, OnesHere);

// Actors on shares of one GPU: different processes, the same device.
class Holder {
 public:
  gpu::Tensor Make(int n) { return Ones(n); }
  gpu::Tensor Twice(gpu::Tensor x) { return Double(x); }
  double Total(gpu::Tensor x) { return Sum(x); }
  int MyPid() { return getpid(); }
  // Doubles a tensor it keeps and returns it again: each result must show the latest values.
  gpu::Tensor Grow(int n) {
    gpu::Context& ctx = gpu::CurrentContext();
    if (!kept_.valid()) kept_ = Ones(n);
    Check(gpu::ops::Scale(ctx.backend(), ctx.stream(), 2, kept_.array()));
    return kept_;
  }
  int64_t InUse() { return static_cast<int64_t>(gpu::CurrentContext().memory().bytes_in_use()); }
  int64_t Exported() {
    return static_cast<int64_t>(prism::CurrentCoreWorker()->gpu_tasks().exported_count());
  }
  // Device objects of this process in the host store now, spills and restores so far.
  std::vector<uint64_t> Spills() {
    auto s = prism::CurrentCoreWorker()->gpu_tasks().spill_stats();
    return {s.spilled_objects, s.spills, s.restores};
  }

  // Device objects this process received and sent through pair groups: {received, sent}.
  // The torch.distributed variables as this process has them (a move's pair group sets none).
  std::string TorchEnv() {
    std::string out;
    for (const char* k : {"RANK", "WORLD_SIZE", "MASTER_PORT"})
      out += std::getenv(k) ? std::string(k) + " " : "";
    return out;
  }
  std::vector<uint64_t> Moved() {
    auto t = prism::CurrentCoreWorker()->gpu_tasks().transfer_stats();
    return {t.received, t.sent};
  }

  // What crossed the host in this process so far (the counting wrapper around its backend).
  std::vector<uint64_t> Counts() {
    auto c = gpu::CountsOf(gpu::CurrentContext().backend());
    if (!c) throw std::runtime_error("the backend is not counting (PRISM_GPU_COUNT_CALLS=1)");
    return {c->host_syncs, c->host_copies, c->device_copies, c->kernels};
  }

 private:
  gpu::Tensor kept_;
};
Holder* MakeHolder() { return new Holder(); }

// A GPU actor holding all 8 GPUs of an NVSwitch box: each step moves the tensor to the next GPU
// (a peer copy on that GPU's stream, after waiting on the last step's event) and doubles it.
class Ring {
 public:
  gpu::Tensor Start(int n) {
    gpu::Context& ctx = gpu::CurrentContext();
    gpu::Tensor t = gpu::Tensor::Empty(ctx, gpu::DType::kFloat32, {n}).value();
    Check(gpu::ops::Fill(ctx.backend(), ctx.stream(), t.array(), 1));
    return t;
  }
  gpu::Tensor Step(gpu::Tensor x, int device) {
    gpu::Context& ctx = gpu::CurrentContext();
    gpu::Stream& s = ctx.stream(device);
    gpu::Tensor y =
        gpu::Tensor::Empty(ctx.backend(), ctx.memory(device), s, x.dtype(), x.shape()).value();
    Check(s.CopyAsync(y.data(), x.data(), x.bytes()));  // GPU x.device() -> GPU `device`
    Check(gpu::ops::Scale(ctx.backend(), s, 2, y.array()));
    return y;
  }
  std::vector<int64_t> Devices(gpu::Tensor x) {
    auto c = gpu::CountsOf(gpu::CurrentContext().backend());
    return {x.device(), static_cast<int64_t>(gpu::CurrentContext().devices().size()),
            static_cast<int64_t>(c->host_syncs), static_cast<int64_t>(c->host_copies),
            static_cast<int64_t>(c->device_copies)};
  }
};
Ring* MakeRing() { return new Ring(); }
PRISM_REMOTE(MakeRing, &Ring::Start, &Ring::Step, &Ring::Devices);
PRISM_REMOTE(MakeHolder, &Holder::Make, &Holder::Twice, &Holder::Total, &Holder::MyPid,
             &Holder::Counts, &Holder::InUse, &Holder::Exported, &Holder::Grow, &Holder::Spills,
             &Holder::Moved, &Holder::TorchEnv);

class DeviceObjectsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("PRISM_GPU_COUNT_CALLS", "1", 1);
    PRISM_INIT_GPU_SUITE((prism::InitOptions{.num_cpus = 4}), "nvlink-pairs-4", "128M", 1);
  }
  void TearDown() override {
    prism_test::ShutdownGpuSuite();
    unsetenv("PRISM_GPU_COUNT_CALLS");
  }
};

// Eleven GPU calls each taking the last one's tensor by ref: no host synchronization and no copy
// through the host, counted by the wrapper around the process's backend.
TEST_F(DeviceObjectsTest, AChainPassesDeviceObjectsWithoutHostSyncsOrCopies) {
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  const int n = 1 << 14;
  auto x = a.Task(&Holder::Make).Remote(n);
  for (int i = 0; i < 10; ++i) x = a.Task(&Holder::Twice).Remote(x);
  auto counts = prism::Get(a.Task(&Holder::Counts).Remote());
  EXPECT_EQ(counts[0], 0u) << "host syncs";
  EXPECT_EQ(counts[1], 0u) << "host copies";
  EXPECT_EQ(counts[2], 10u) << "device copies (one per step)";
  EXPECT_EQ(counts[3], 11u) << "kernels: the fill, then a scale per step";
  EXPECT_DOUBLE_EQ(prism::Get(a.Task(&Holder::Total).Remote(x)), 1024.0 * n);
  counts = prism::Get(a.Task(&Holder::Counts).Remote());
  EXPECT_EQ(counts[0], 1u) << "reading the sum on the host is the one sync";
}

TEST(DeviceObjectsOnEightGpus, AChainAcrossEightGpusWithoutHostSyncsOrCopies) {
  setenv("PRISM_GPU_COUNT_CALLS", "1", 1);
  PRISM_INIT_GPU_SUITE((prism::InitOptions{.num_cpus = 2}), "h100-sxm-8", "64M", 8);
  auto ring = prism::Actor(MakeRing).Options({.num_gpus = 8}).Remote();
  const int n = 1 << 12;
  auto x = ring.Task(&Ring::Start).Remote(n);
  for (int step = 1; step <= 16; ++step)
    x = ring.Task(&Ring::Step).Remote(x, step % 8);  // twice round
  auto facts = prism::Get(ring.Task(&Ring::Devices).Remote(x));
  EXPECT_EQ(facts[0], 0) << "the last step ran on GPU 0";
  EXPECT_EQ(facts[1], 8) << "the actor holds all eight";
  EXPECT_EQ(facts[2], 0) << "no host synchronization";
  EXPECT_EQ(facts[3], 0) << "no copy through the host";
  EXPECT_EQ(facts[4], 16) << "one peer copy per step";
  // The driver reads the result (an IPC mapping of GPU 0's memory): 2^16 each.
  auto host = prism::Get(x).ToHost();
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  EXPECT_EQ(reinterpret_cast<const float*>(host->data())[n - 1], 65536.0f);
  prism_test::ShutdownGpuSuite();
  unsetenv("PRISM_GPU_COUNT_CALLS");
}

TEST_F(DeviceObjectsTest, AChainOfGpuTasksPassesTensorsByRef) {
  const int n = 1 << 16;
  prism::ObjectRef<gpu::Tensor> x = prism::Task(Ones).Options({.num_gpus = 1}).Remote(n);
  for (int i = 0; i < 10; ++i) x = prism::Task(Double).Options({.num_gpus = 1}).Remote(x);
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(x)), 1024.0 * n);
  // The driver reads it too: an IPC import of the worker's memory, ordered by its event.
  gpu::Tensor t = prism::Get(x, 30s);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{n}));
  auto host = t.ToHost();
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  const auto* values = reinterpret_cast<const float*>(host->data());
  EXPECT_EQ(values[0], 1024.0f);
  EXPECT_EQ(values[n - 1], 1024.0f);
}

TEST_F(DeviceObjectsTest, MemoryPrismDidNotAllocateIsPassedOnAsACopy) {
  gpu::Tensor t = prism::Get(prism::Task(Middle).Options({.num_gpus = 1}).Remote(), 30s);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{4}));
  auto host = t.ToHost();
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  const auto* v = reinterpret_cast<const float*>(host->data());
  EXPECT_EQ(std::vector<float>(v, v + 4), (std::vector<float>{4, 5, 6, 7}));
}

TEST_F(DeviceObjectsTest, ATensorHandedToAnotherProcessOnItsDevice) {
  // Two actors on halves of one GPU (fractions pack onto one device): two processes.
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  EXPECT_NE(prism::Get(a.Task(&Holder::MyPid).Remote()),
            prism::Get(b.Task(&Holder::MyPid).Remote()));
  auto made = a.Task(&Holder::Make).Remote(4096);
  EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(made)), 4096.0);
  EXPECT_DOUBLE_EQ(prism::Get(a.Task(&Holder::Total).Remote(made)), 4096.0)
      << "and in its own process";
}

// The producer frees a device object once its owner released it and every importer closed its
// mapping (after its last use): the memory is back.
TEST_F(DeviceObjectsTest, ReleasedDeviceObjectsAreFreedAfterTheirImporters) {
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  int64_t before = prism::Get(a.Task(&Holder::InUse).Remote());
  {
    auto made = a.Task(&Holder::Make).Remote(1 << 20);
    EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(made)), double(1 << 20))
        << "b maps it";
    EXPECT_GE(prism::Get(a.Task(&Holder::InUse).Remote()), before + (4 << 20));
    EXPECT_EQ(prism::Get(a.Task(&Holder::Exported).Remote()), 1);
  }  // the driver's last ref goes
  int64_t left = -1;
  for (int i = 0; i < 200 && left != 0; ++i) {
    left = prism::Get(a.Task(&Holder::Exported).Remote());
    if (left != 0) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(left, 0) << "released at the producer";
  EXPECT_EQ(prism::Get(a.Task(&Holder::InUse).Remote()), before);
  // A tensor still referenced stays.
  auto kept = a.Task(&Holder::Make).Remote(16);
  prism::Get(kept);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(prism::Get(a.Task(&Holder::Exported).Remote()), 1);
  EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(kept)), 16.0);
}

// A tensor changed in place and returned again: its event is recorded again, so every reader, in
// its process and in another, sees the values as of that return (a reader of a stale event would
// race the doubling).
TEST_F(DeviceObjectsTest, ATensorReturnedAgainCarriesItsLatestWork) {
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 0.5}).Remote();
  const int n = 1 << 18;
  auto first = a.Task(&Holder::Grow).Remote(n);
  EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(first)), 2.0 * n);
  for (int i = 2; i <= 6; ++i) {
    auto again = a.Task(&Holder::Grow).Remote(n);
    EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(again)), double(1 << i) * n) << i;
  }
}

int ReadPid(const std::string& marker);
bool Gone(int pid);

// A tensor on a GPU the consumer's process does not see (each holds a whole GPU of its own)
// moves through a pair group of the collectives (gloo on sim, nccl on CUDA), onto the
// consumer's GPU, ordered after the producer's work.
TEST_F(DeviceObjectsTest, ATensorOnAGpuTheConsumerDoesNotSeeMovesThroughTheCollectives) {
  std::string why;
  if (prism_test::OnCuda() && prism_test::CudaDeviceCount(&why) < 2) GTEST_SKIP() << "needs 2 GPUs";
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  const int n = 1 << 20;
  auto made = a.Task(&Holder::Grow).Remote(n);  // 2 each
  // A task on another GPU, an actor on another GPU, and back again.
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(made), 60s),
                   2.0 * n);
  auto twice = b.Task(&Holder::Twice).Remote(made);
  EXPECT_DOUBLE_EQ(prism::Get(a.Task(&Holder::Total).Remote(twice), 60s), 4.0 * n);
  // Each way at once (the two processes join each other's pair groups side by side), and several
  // in a row from one producer (a pair's sends and receives match in order).
  std::vector<prism::ObjectRef<double>> sums;
  for (int i = 0; i < 4; ++i) {
    auto from_a = a.Task(&Holder::Make).Remote(1000 + i);
    auto from_b = b.Task(&Holder::Make).Remote(2000 + i);
    sums.push_back(b.Task(&Holder::Total).Remote(from_a));
    sums.push_back(a.Task(&Holder::Total).Remote(from_b));
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(prism::Get(sums[2 * i], 60s), 1000.0 + i);
    EXPECT_DOUBLE_EQ(prism::Get(sums[2 * i + 1], 60s), 2000.0 + i);
  }
  // a sent to the task, to b and 4 times more; b received 5 and sent 5 (one back to a, 4 more).
  EXPECT_EQ(prism::Get(a.Task(&Holder::Moved).Remote()), (std::vector<uint64_t>{5, 6}));
  EXPECT_EQ(prism::Get(b.Task(&Holder::Moved).Remote()), (std::vector<uint64_t>{5, 5}));
  EXPECT_EQ(prism::Get(a.Task(&Holder::TorchEnv).Remote()), "")
      << "pair groups leave the environment alone";
  EXPECT_EQ(prism::Get(b.Task(&Holder::TorchEnv).Remote()), "");
  // The producer let its imports go once sent: only results still referenced stay exported.
  made = {};
  twice = {};
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(prism::Get(a.Task(&Holder::Exported).Remote()), 0);
  EXPECT_EQ(prism::Get(b.Task(&Holder::Exported).Remote()), 0);
}

// Its producer gone, the tensor is rebuilt through lineage and moved again.
TEST_F(DeviceObjectsTest, AMovedTensorsKilledProducerIsRebuilt) {
  std::string why;
  if (prism_test::OnCuda() && prism_test::CudaDeviceCount(&why) < 2) GTEST_SKIP() << "needs 2 GPUs";
  std::string marker = ::testing::TempDir() + "/moved-producer-" + std::to_string(getpid());
  // The actor first, and up: a worker that ran a task may become an actor's process, and the
  // producer killed below must not be the actor's.
  auto b = prism::Actor(MakeHolder).Options({.num_gpus = 1}).Remote();
  ASSERT_EQ(prism::Get(b.Task(&Holder::Exported).Remote(), 60s), 0);
  auto made = prism::Task(OnesHere).Options({.num_gpus = 1, .max_retries = 2}).Remote(4096, marker);
  EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(made), 60s), 4096.0);
  int producer = ReadPid(marker);
  ASSERT_GT(producer, 0);
  ASSERT_EQ(::kill(producer, SIGKILL), 0);
  ASSERT_TRUE(Gone(producer));
  EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(made), 60s), 4096.0);
  EXPECT_NE(ReadPid(marker), producer) << "made again by another worker";
  std::remove(marker.c_str());
}

int ReadPid(const std::string& marker) {
  int pid = 0;
  std::ifstream(marker) >> pid;
  return pid;
}

bool Gone(int pid) {
  for (int i = 0; i < 400; ++i) {
    if (::kill(pid, 0) != 0) return true;
    std::this_thread::sleep_for(25ms);
  }
  return false;
}

// A GPU worker killed after making device objects: the owner (the driver) runs the tasks that
// made them again, and every reader, a task's argument or a Get, sees the rebuilt values.
TEST_F(DeviceObjectsTest, AKilledProducersDeviceObjectsAreRebuiltThroughLineage) {
  const int n = 1 << 14;
  std::string marker = ::testing::TempDir() + "/prism-producer-" + std::to_string(getpid());
  auto x = prism::Task(OnesHere).Options({.num_gpus = 1}).Remote(n, marker);
  auto y = prism::Task(Double).Options({.num_gpus = 1}).Remote(x);
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(y)), 2.0 * n);
  int producer = ReadPid(marker);
  ASSERT_GT(producer, 0);
  EXPECT_EQ(prism::CurrentCoreWorker()->lineage_size(), 2u) << "x and y are kept for rebuilding";
  std::remove(marker.c_str());
  ASSERT_EQ(::kill(producer, SIGKILL), 0);
  ASSERT_TRUE(Gone(producer));
  // A reader of y (made from x, perhaps in the same worker) gets the right values.
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(y), 60s), 2.0 * n);
  // x was made again, in another worker; the driver reads both.
  for (int i = 0; i < 200 && ReadPid(marker) == 0; ++i) std::this_thread::sleep_for(25ms);
  int again = ReadPid(marker);
  EXPECT_GT(again, 0) << "x's task ran again";
  EXPECT_NE(again, producer);
  auto hx = prism::Get(x, 60s).ToHost();
  ASSERT_TRUE(hx.ok()) << hx.status().ToString();
  EXPECT_EQ(reinterpret_cast<const float*>(hx->data())[n - 1], 1.0f);
  auto hy = prism::Get(y, 60s).ToHost();
  ASSERT_TRUE(hy.ok()) << hy.status().ToString();
  EXPECT_EQ(reinterpret_cast<const float*>(hy->data())[0], 2.0f);
  std::remove(marker.c_str());
  // Released results are no longer kept.
  { auto gone = std::move(x); }
  { auto gone = std::move(y); }
  size_t kept = 1;
  for (int i = 0; i < 200 && kept != 0; ++i) {
    kept = prism::CurrentCoreWorker()->lineage_size();
    if (kept != 0) std::this_thread::sleep_for(25ms);
  }
  EXPECT_EQ(kept, 0u);
}

// Without retries there is no lineage: the device objects of a dead producer are lost, with an
// error saying so.
TEST_F(DeviceObjectsTest, WithoutRetriesADeadProducersObjectsAreLost) {
  std::string marker = ::testing::TempDir() + "/prism-producer-nr-" + std::to_string(getpid());
  auto x = prism::Task(OnesHere).Options({.num_gpus = 1, .max_retries = 0}).Remote(64, marker);
  EXPECT_DOUBLE_EQ(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(x)), 64.0);
  EXPECT_EQ(prism::CurrentCoreWorker()->lineage_size(), 0u);
  int producer = ReadPid(marker);
  std::remove(marker.c_str());
  ASSERT_GT(producer, 0);
  ASSERT_EQ(::kill(producer, SIGKILL), 0);
  ASSERT_TRUE(Gone(producer));
  EXPECT_THROW(prism::Get(prism::Task(Sum).Options({.num_gpus = 1}).Remote(x), 60s),
               prism::ObjectLostError);
  EXPECT_THROW(prism::Get(x, 60s).ToHost(), prism::ObjectLostError);
}

// A producer whose memory (its 100 MiB gpu_memory share here; the whole device works the same)
// fills with device objects nobody in it uses spills the least recently used to the host store; a
// reader, in its process or another, gets them back.
TEST_F(DeviceObjectsTest, DeviceObjectsSpillToTheHostStoreUnderPressureAndComeBack) {
  auto a = prism::Actor(MakeHolder).Options({.num_gpus = 0.5, .gpu_memory = 100 << 20}).Remote();
  auto b = prism::Actor(MakeHolder)
               .Options({.num_gpus = 0.5})
               .Remote();  // the same GPU, another process
  const int n = 8 << 20;   // 32 MiB of float32 each: six do not fit
  std::vector<prism::ObjectRef<gpu::Tensor>> made;
  for (int i = 0; i < 6; ++i) made.push_back(a.Task(&Holder::Make).Remote(n));
  prism::Get(a.Task(&Holder::InUse).Remote());  // (after them: an actor's calls run in order)
  auto stats = prism::Get(a.Task(&Holder::Spills).Remote());
  EXPECT_GE(stats[1], 2u) << "made room by spilling";
  EXPECT_GE(stats[0], 2u) << "in the host store now";
  EXPECT_GT(prism::GetObjectStoreStats().num_objects, 0u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_DOUBLE_EQ(prism::Get(b.Task(&Holder::Total).Remote(made[i]), 60s), double(n))
        << "read in another process " << i;
  }
  EXPECT_DOUBLE_EQ(prism::Get(a.Task(&Holder::Total).Remote(made[0]), 60s), double(n))
      << "and in its own";
  stats = prism::Get(a.Task(&Holder::Spills).Remote());
  EXPECT_GE(stats[2], 2u) << "restored for their readers";
  made.clear();  // released: spilled copies leave the host store with them
  uint64_t left = 1;
  for (int i = 0; i < 400 && left != 0; ++i) {
    left = prism::Get(a.Task(&Holder::Spills).Remote())[0] +
           uint64_t(prism::Get(a.Task(&Holder::Exported).Remote()));
    if (left != 0) std::this_thread::sleep_for(25ms);
  }
  EXPECT_EQ(left, 0u);
}

}  // namespace

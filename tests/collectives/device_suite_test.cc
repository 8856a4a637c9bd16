// The collectives' typed suite on device memory, on the caller's stream: gloo on sim devices
// (2, 3 and 4 ranks, each an actor holding a GPU), and nccl on CUDA devices when run with
// PRISM_TEST_GPU_BACKEND=cuda (ctest label gpu: as many ranks as the machine has GPUs, up to 4,
// one on a one-GPU machine). Also ranks that follow the GPU topology.
#include <gtest/gtest.h>
#include <prism/collective.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include <algorithm>
#include <string>
#include <vector>

#include "collectives/suite.h"
#include "e2e/gpu_test_backend.h"

namespace {

using namespace std::chrono_literals;
namespace col = prism::collective;
namespace gpu = prism::gpu;
using col::DType;
using col::ReduceOp;
using namespace suite;

void Check(const prism::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

class DeviceMember {
 public:
  // Runs `op` on this rank's inputs, copied into device memory, on the actor's stream; returns
  // what it got.
  std::vector<double> Run(std::string name, int op, int dtype_int, int reduce_int, int count,
                          int root) {
    col::Group& g = col::GetGroup(name);
    gpu::Context& ctx = gpu::CurrentContext();
    auto dtype = static_cast<DType>(dtype_int);
    auto reduce = static_cast<ReduceOp>(reduce_int);
    Plan plan = MakePlan(g, op, dtype, reduce, count);
    auto send = ctx.Allocate(std::max<size_t>(plan.send.size(), 1)).value();
    auto recv = ctx.Allocate(std::max<size_t>(plan.initial_recv.size(), 1)).value();
    Check(ctx.stream().CopyAsync(send.data(), plan.send.data(), plan.send.size()));
    Check(ctx.stream().CopyAsync(recv.data(), plan.initial_recv.data(), plan.initial_recv.size()));
    Apply(g, op, dtype, reduce, count, root, send.data(), recv.data(), &ctx.stream());
    std::vector<uint8_t> out(plan.initial_recv.size());
    Check(ctx.stream().CopyAsync(out.data(), recv.data(), out.size()));
    Check(ctx.stream().Synchronize());
    return Outcome(g, op, root, out, dtype, plan.send);
  }
  std::vector<int> Gpus() { return prism::GetGpuIds(); }
  int Rank(std::string name) { return col::GetGroup(name).rank(); }
  void Leave(std::string name) { col::DestroyGroup(name); }
};
DeviceMember* MakeDeviceMember() { return new DeviceMember(); }
PRISM_REMOTE(MakeDeviceMember, &DeviceMember::Run, &DeviceMember::Gpus, &DeviceMember::Rank,
             &DeviceMember::Leave);

class DeviceSuiteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PRISM_INIT_GPU_SUITE((prism::InitOptions{.num_cpus = 8}), "nvlink-pairs-4", "256M", 1);
  }
  void TearDown() override { prism_test::ShutdownGpuSuite(); }

  col::Backend backend() const {
    return prism_test::OnCuda() ? col::Backend::kNccl : col::Backend::kGloo;
  }
  int gpus() const {
    std::string why;
    return prism_test::OnCuda() ? prism_test::CudaDeviceCount(&why) : 4;
  }
  std::vector<prism::ActorHandle<DeviceMember>> Members(int n) {
    std::vector<prism::ActorHandle<DeviceMember>> out;
    for (int i = 0; i < n; ++i)
      out.push_back(prism::Actor(MakeDeviceMember).Options({.num_gpus = 1}).Remote());
    return out;
  }
  void CheckOp(const std::vector<prism::ActorHandle<DeviceMember>>& m, const std::string& name,
               int op, DType dtype, ReduceOp reduce, int count, int root = 0) {
    int n = static_cast<int>(m.size());
    std::vector<prism::ObjectRef<std::vector<double>>> refs;
    for (auto& a : m)
      refs.push_back(
          a.Task(&DeviceMember::Run).Remote(name, op, int(dtype), int(reduce), count, root));
    std::vector<std::vector<double>> got;
    for (int r = 0; r < n; ++r) got.push_back(prism::Get(refs[r], 60s));
    ExpectReference(got, op, dtype, reduce, count, root);
  }
};

TEST_F(DeviceSuiteTest, EveryOperationAndDtypeOnDeviceMemory) {
  std::vector<int> sizes;
  for (int n : {2, 3, 4}) {
    if (n <= gpus()) sizes.push_back(n);
  }
  if (sizes.empty()) sizes.push_back(1);  // one GPU: a 1-rank group
  for (int n : sizes) {
    auto m = Members(n);
    std::string name = "device" + std::to_string(n);
    col::CreateGroup(m, backend(), name, {.timeout = 30s});
    EveryCase(n, [&](int op, DType dtype, ReduceOp reduce, int count, int root) {
      CheckOp(m, name, op, dtype, reduce, count, root);
    });
    col::DestroyGroup(name);
    for (auto& a : m) prism::Kill(a);
  }
}

// Four actors on nvlink-pairs-4 (GPUs 0-1 and 2-3 joined by NVLink), declared so that each pair
// is split: with RankOrder::kTopology the ranks' ring puts each pair side by side (actor 0 stays
// rank 0); as given, the declared order stands.
TEST_F(DeviceSuiteTest, RanksCanFollowTheGpuTopology) {
  if (prism_test::OnCuda()) GTEST_SKIP() << "the topology checked here is sim's nvlink-pairs-4";
  auto m = Members(4);
  std::vector<int> gpu_of;
  for (auto& a : m) gpu_of.push_back(prism::Get(a.Task(&DeviceMember::Gpus).Remote(), 30s).at(0));
  // Declared order: GPUs 0, 2, 1, 3 (no NVLink pair adjacent, even round the ring).
  std::vector<prism::ActorHandle<DeviceMember>> declared;
  for (int want : {0, 2, 1, 3}) {
    declared.push_back(m[std::find(gpu_of.begin(), gpu_of.end(), want) - gpu_of.begin()]);
  }
  auto ranks = [&](const std::string& name, col::RankOrder order) {
    col::CreateGroup(declared, col::Backend::kGloo, name, {.timeout = 30s, .order = order});
    std::vector<prism::ObjectRef<int>> refs;
    for (auto& a : declared) refs.push_back(a.Task(&DeviceMember::Rank).Remote(name));
    std::vector<int> gpu_at(4, -1);  // rank -> GPU
    const int declared_gpu[] = {0, 2, 1, 3};
    for (int i = 0; i < 4; ++i) gpu_at.at(prism::Get(refs[i], 60s)) = declared_gpu[i];
    return gpu_at;
  };
  std::vector<int> given = ranks("given", col::RankOrder::kAsGiven);
  EXPECT_EQ(given, (std::vector<int>{0, 2, 1, 3}));
  std::vector<int> ring = ranks("ring", col::RankOrder::kTopology);
  EXPECT_EQ(ring[0], 0) << "the first actor stays rank 0";
  int nvlink_hops = 0;
  for (int r = 0; r < 4; ++r) {
    int a = ring[r], b = ring[(r + 1) % 4];
    nvlink_hops += (std::min(a, b) == 0 && std::max(a, b) == 1) ||
                   (std::min(a, b) == 2 && std::max(a, b) == 3);
  }
  EXPECT_EQ(nvlink_hops, 2) << "both NVLink pairs adjacent in rank order";
  CheckOp(declared, "ring", kAllReduce, DType::kFloat32, ReduceOp::kSum, 100);
}

}  // namespace

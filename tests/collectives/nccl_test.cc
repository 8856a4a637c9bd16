// The nccl backend: on a GPU, a 1-rank group runs every operation on device memory, queued on the
// caller's stream; without a GPU, joining an nccl group is a clear error.
#include <gtest/gtest.h>
#include <prism/collective.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace col = prism::collective;
namespace gpu = prism::gpu;

class Joiner {
 public:
  std::string TryJoin(std::string name) {
    try {
      col::GetGroup(name);
      return "joined";
    } catch (const prism::Error& e) {
      return e.what();
    }
  }
};
Joiner* MakeJoiner() { return new Joiner(); }
PRISM_REMOTE(MakeJoiner, &Joiner::TryJoin);

bool HaveCudaDevice() {
  auto b = gpu::CreateBackend({.kind = "cuda"});
  return b.ok() && (*b)->device_count() > 0;
}

TEST(NcclTest, WithoutAGpuJoiningIsAClearError) {
  if (HaveCudaDevice()) GTEST_SKIP() << "this machine has a GPU";
  prism::Init({.num_cpus = 2});
  auto a = prism::Actor(MakeJoiner).Remote();
  col::CreateGroup(std::vector<prism::ActorHandle<Joiner>>{a}, col::Backend::kNccl, "nogpu",
                   {.timeout = 5s});
  std::string said = prism::Get(a.Task(&Joiner::TryJoin).Remote(std::string("nogpu")), 30s);
  EXPECT_NE(said.find("collective group 'nogpu'"), std::string::npos) << said;
  EXPECT_TRUE(said.find("no CUDA device") != std::string::npos ||
              said.find("not available") != std::string::npos)
      << said;
  prism::Shutdown();
}

template <typename T>
std::vector<T> ToHost(gpu::Stream& s, const void* p, size_t n) {
  std::vector<T> out(n);
  EXPECT_TRUE(s.CopyAsync(out.data(), p, n * sizeof(T)).ok());
  EXPECT_TRUE(s.Synchronize().ok());
  return out;
}

TEST(NcclTest, OneRankGroupOnTheGpu) {
  if (!HaveCudaDevice()) GTEST_SKIP() << "no CUDA device here";
  prism::Init({.num_cpus = 1});
  {
    col::Group& g = col::InitGroup("one", 1, 0, col::Backend::kNccl);
    EXPECT_EQ(g.size(), 1);
    auto backend = gpu::CreateBackend({.kind = "cuda"}).value();
    auto stream = backend->CreateStream(0, "nccl test").value();
    gpu::MemoryResource& mem = *backend->memory(0).value();
    auto a = gpu::DeviceBuffer::Allocate(mem, 1024 * sizeof(float), *stream).value();
    auto b = gpu::DeviceBuffer::Allocate(mem, 1024 * sizeof(float), *stream).value();
    std::vector<float> host(1024);
    for (size_t i = 0; i < host.size(); ++i) host[i] = float(i % 17) - 8;
    ASSERT_TRUE(stream->CopyAsync(a.data(), host.data(), host.size() * sizeof(float)).ok());
    for (auto op : {col::ReduceOp::kSum, col::ReduceOp::kProd, col::ReduceOp::kMin,
                    col::ReduceOp::kMax, col::ReduceOp::kAvg}) {
      g.AllReduce(a.data(), b.data(), 1024, col::DType::kFloat32, op, stream.get());
      EXPECT_EQ(ToHost<float>(*stream, b.data(), 1024), host) << "one rank: the input";
    }
    g.AllGather(a.data(), b.data(), 1024, col::DType::kFloat32, stream.get());
    EXPECT_EQ(ToHost<float>(*stream, b.data(), 1024), host);
    g.ReduceScatter(a.data(), b.data(), 1024, col::DType::kFloat32, col::ReduceOp::kSum,
                    stream.get());
    EXPECT_EQ(ToHost<float>(*stream, b.data(), 1024), host);
    g.Broadcast(a.data(), 1024, col::DType::kFloat32, 0, stream.get());
    g.Reduce(a.data(), b.data(), 1024, col::DType::kFloat32, col::ReduceOp::kMax, 0, stream.get());
    EXPECT_EQ(ToHost<float>(*stream, b.data(), 1024), host);
    for (auto dtype : {col::DType::kFloat16, col::DType::kBFloat16, col::DType::kFloat64,
                       col::DType::kInt32, col::DType::kInt64}) {
      g.AllReduce(a.data(), b.data(), 256, dtype, col::ReduceOp::kSum, stream.get());
    }
    g.SendRecv({}, stream.get());  // an empty batch (one rank has no peer)
    EXPECT_THROW(g.SendRecv({col::P2POp::Send(a.data(), 4, col::DType::kFloat32, 0)}, stream.get()),
                 prism::InvalidArgumentError)
        << "a rank cannot send to itself";
    EXPECT_TRUE(stream->Synchronize().ok());
    g.Barrier();
    // A subgroup split from it (ncclCommSplit), and a split this rank stays out of.
    col::Group* sub = col::SplitGroup("one", "one.sub", 0);
    ASSERT_NE(sub, nullptr);
    EXPECT_EQ(sub->size(), 1);
    sub->AllReduce(a.data(), b.data(), 1024, col::DType::kFloat32, col::ReduceOp::kSum,
                   stream.get());
    EXPECT_EQ(ToHost<float>(*stream, b.data(), 1024), host);
    EXPECT_EQ(col::SplitGroup("one", "one.none", col::kNoColor), nullptr);
    col::DestroyGroup("one.sub");
    EXPECT_THROW(g.Broadcast(a.data(), 1, col::DType::kFloat32, 3, stream.get()),
                 prism::InvalidArgumentError);
    EXPECT_THROW(
        g.AllReduce(a.data(), b.data(), 1, col::DType::kUInt8, col::ReduceOp::kSum, stream.get()),
        prism::InvalidArgumentError);
    col::DestroyGroup("one");
  }
  prism::Shutdown();
}

}  // namespace

// What only the sim backend does: it reports the bugs a real GPU would hide (races between
// streams, use after free, double free), poisons freed memory, renumbers devices per process and
// models time on a virtual clock.
#include "gpu/sim/sim_backend.h"

#include <gtest/gtest.h>
#include <prism/gpu/ops.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "gpu/must.h"

namespace prism::gpu::sim {
namespace {

using prism::testing::Must;

std::unique_ptr<SimBackend> MakeSim(const std::string& profile = "h100-sxm-8",
                                    std::optional<std::string> visible = std::nullopt) {
  SimOptions o;
  o.topology = Must(Topology::Load(profile));
  o.visible = std::move(visible);
  o.device_memory = 64ull << 20;
  return Must(SimBackend::Create(std::move(o)));
}

class SimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_ = MakeSim();
    a_ = Must(sim_->CreateStream(0, "producer"));
    b_ = Must(sim_->CreateStream(0, "consumer"));
    mem_ = Must(sim_->memory(0));
  }
  DeviceArray Array(const DeviceBuffer& b) {
    return {b.data(), DType::kFloat32, b.size() / 4, b.device()};
  }
  std::unique_ptr<SimBackend> sim_;
  std::unique_ptr<Stream> a_, b_;
  MemoryResource* mem_ = nullptr;
};

TEST_F(SimTest, UnorderedUseOnAnotherStreamIsAnError) {
  DeviceBuffer x = Must(DeviceBuffer::Allocate(*mem_, 4096, *a_));
  DeviceBuffer out = Must(DeviceBuffer::Allocate(*mem_, 4, *b_));
  // Allocated on a: b may not touch it before it is ordered after that.
  Status early = ops::Fill(*sim_, *b_, Array(x), 1);
  EXPECT_EQ(early.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(early.message().find("race"), std::string::npos) << early.message();

  Must(ops::Fill(*sim_, *a_, Array(x), 1));
  Status read = ops::Reduce(*sim_, *b_, ReduceOp::kSum, Array(x), Array(out));
  EXPECT_NE(read.message().find("stream 'consumer' reads it while the write on stream 'producer'"),
            std::string::npos)
      << read.message();

  auto e = Must(sim_->CreateEvent(0));
  Must(e->Record(*a_));
  Must(b_->Wait(*e));
  Must(ops::Reduce(*sim_, *b_, ReduceOp::kSum, Array(x), Array(out)));  // ordered: fine
  // a writing again while b's read is not ordered before: a write-after-read race.
  Status war = ops::Fill(*sim_, *a_, Array(x), 2);
  EXPECT_NE(war.message().find("read on stream 'consumer'"), std::string::npos) << war.message();
  // A host synchronization orders everything before it.
  Must(b_->Synchronize());
  Must(ops::Fill(*sim_, *a_, Array(x), 2));
  Must(a_->Synchronize());
  out.set_stream(*b_);
  EXPECT_TRUE(sim_->DeviceStatus(0).ok()) << "races are errors of the call, not faults";
}

TEST_F(SimTest, FreedMemoryIsPoisonedAndUseAfterFreeIsAStickyFault) {
  DeviceBuffer x = Must(DeviceBuffer::Allocate(*mem_, 1024, *a_));
  void* raw = x.data();
  Must(ops::Fill(*sim_, *a_, Array(x), 3));
  Must(x.Free());
  Must(a_->Synchronize());
  // Sim device memory is host memory, so the test can look: every byte is the poison.
  auto* bytes = static_cast<uint8_t*>(raw);
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(bytes[i], 0xFF) << i;
  float f;
  std::memcpy(&f, bytes, 4);
  EXPECT_TRUE(std::isnan(f));

  Status use = ops::Fill(*sim_, *a_, {raw, DType::kFloat32, 256, 0}, 1);
  EXPECT_NE(use.message().find("use after free"), std::string::npos) << use.ToString();
  EXPECT_EQ(sim_->DeviceStatus(0).code(), StatusCode::kInternal);
  EXPECT_FALSE(sim_->CreateStream(0, "later").ok()) << "the fault is sticky";
  EXPECT_FALSE(a_->Synchronize().ok());
  // Other devices are not affected.
  auto s1 = Must(sim_->CreateStream(1, "other device"));
  EXPECT_TRUE(s1->Synchronize().ok());
}

TEST_F(SimTest, DoubleFreeAndUnorderedFreeAreErrors) {
  void* p = Must(mem_->Allocate(512, *a_));
  Must(mem_->Deallocate(p, 512, *a_));
  Status twice = mem_->Deallocate(p, 512, *a_);
  EXPECT_NE(twice.message().find("double free"), std::string::npos) << twice.message();

  void* q = Must(mem_->Allocate(512, *a_));
  Must(a_->Synchronize());
  Must(b_->MemsetAsync(q, 0, 512));  // ordered after the allocation by the host sync
  Status early_free = mem_->Deallocate(q, 512, *a_);
  EXPECT_NE(early_free.message().find("race"), std::string::npos) << early_free.message();
  EXPECT_EQ(mem_->Deallocate(q, 100, *a_).code(), StatusCode::kInvalidArgument) << "wrong size";
  Must(b_->Synchronize());
  Must(mem_->Deallocate(q, 512, *a_));
}

TEST_F(SimTest, OutOfBoundsIsAnIllegalAddress) {
  DeviceBuffer x = Must(DeviceBuffer::Allocate(*mem_, 1000, *a_));
  Status past = ops::Fill(*sim_, *a_, {x.data(), DType::kFloat32, 251, 0}, 0);
  EXPECT_NE(past.message().find("past the end"), std::string::npos) << past.ToString();
  EXPECT_FALSE(sim_->DeviceStatus(0).ok());
}

TEST_F(SimTest, QuarantineGivesWayUnderPressure) {
  // 64 MiB device: allocate and free 16 MiB many times; the quarantine must not cause OOM.
  for (int i = 0; i < 20; ++i) {
    DeviceBuffer x = Must(DeviceBuffer::Allocate(*mem_, 16 << 20, *a_));
    Must(a_->MemsetAsync(x.data(), i, x.size()));
  }
  DeviceBuffer big = Must(DeviceBuffer::Allocate(*mem_, 60 << 20, *a_));
  EXPECT_NE(big.data(), nullptr);
}

TEST(SimDevicesTest, CudaVisibleDevicesRenumbersPerProcess) {
  auto all = MakeSim();
  ASSERT_EQ(all->device_count(), 8);
  std::string uuid3 = Must(all->device(3)).uuid, uuid1 = Must(all->device(1)).uuid;

  auto two = MakeSim("h100-sxm-8", "3,1");
  ASSERT_EQ(two->device_count(), 2);
  EXPECT_EQ(Must(two->device(0)).uuid, uuid3);
  EXPECT_EQ(Must(two->device(1)).uuid, uuid1);
  EXPECT_EQ(Must(two->device(0)).ordinal, 0);

  auto by_uuid = MakeSim("h100-sxm-8", uuid1.substr(0, uuid1.size() - 2) + "01");
  ASSERT_EQ(by_uuid->device_count(), 1);
  EXPECT_EQ(Must(by_uuid->device(0)).uuid, uuid1);
  // CUDA stops at the first invalid or repeated entry.
  EXPECT_EQ(MakeSim("h100-sxm-8", "2,9,4")->device_count(), 1);
  EXPECT_EQ(MakeSim("h100-sxm-8", "2,2")->device_count(), 1);
  EXPECT_EQ(MakeSim("h100-sxm-8", "")->device_count(), 0);
  EXPECT_EQ(MakeSim("h100-sxm-8", "GPU-")->device_count(), 0);
}

TEST(SimDevicesTest, TheVirtualClockModelsLinks) {
  auto sim = MakeSim("nvlink-pairs-4");
  auto s0 = Must(sim->CreateStream(0, "s0"));
  auto s1 = Must(sim->CreateStream(1, "s1"));
  auto s2 = Must(sim->CreateStream(2, "s2"));
  size_t bytes = 32 << 20;
  DeviceBuffer src = Must(DeviceBuffer::Allocate(*Must(sim->memory(0)), bytes, *s0));
  DeviceBuffer d1 = Must(DeviceBuffer::Allocate(*Must(sim->memory(1)), bytes, *s1));
  DeviceBuffer d2 = Must(DeviceBuffer::Allocate(*Must(sim->memory(2)), bytes, *s2));
  Must(s0->Synchronize());
  Must(s1->Synchronize());
  Must(s2->Synchronize());
  auto time_copy = [&](Stream& s, void* dst) {
    auto start = Must(sim->CreateEvent(s.device(), true));
    auto end = Must(sim->CreateEvent(s.device(), true));
    Must(start->Record(s));
    Must(s.CopyAsync(dst, src.data(), bytes));
    Must(end->Record(s));
    Must(end->Synchronize());
    return Must(end->ElapsedSince(*start));
  };
  double nvlink_ms = time_copy(*s1, d1.data());  // 0 -> 1: NVLink bridge, 56 GB/s
  double pcie_ms = time_copy(*s2, d2.data());    // 0 -> 2: PCIe within the node, 20 GB/s
  std::vector<char> host(bytes);
  double h2d_ms = time_copy(*s0, host.data());  // device -> host: 25 GB/s
  EXPECT_NEAR(nvlink_ms, bytes / 56.0 / 1e6 + 0.002, 0.01);
  EXPECT_NEAR(pcie_ms, bytes / 20.0 / 1e6 + 0.002, 0.01);
  EXPECT_NEAR(h2d_ms, bytes / 25.0 / 1e6 + 0.002, 0.01);
  EXPECT_TRUE(sim->CanAccessPeer(0, 1));
  EXPECT_FALSE(MakeSim("pcie-8-2numa")->CanAccessPeer(0, 4)) << "no peer access across sockets";
}

TEST(SimDevicesTest, EnvironmentSettings) {
  SimOptions o;
  setenv("PRISM_SIM_DEVICE_MEMORY", "3M", 1);
  setenv("PRISM_SIM_JITTER_US", "0", 1);
  Must(ApplySimEnv(o));
  EXPECT_EQ(o.device_memory, 3u << 20);
  EXPECT_EQ(o.jitter_us, 0);
  setenv("PRISM_SIM_DEVICE_MEMORY", "lots", 1);
  EXPECT_EQ(ApplySimEnv(o).code(), StatusCode::kInvalidArgument);
  unsetenv("PRISM_SIM_DEVICE_MEMORY");
  unsetenv("PRISM_SIM_JITTER_US");
  BackendConfig c;
  c.kind = "tpu";
  EXPECT_EQ(CreateBackend(c).status().code(), StatusCode::kInvalidArgument);
  c.kind = "sim";
  c.topology = "no-such-profile";
  EXPECT_EQ(CreateBackend(c).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace prism::gpu::sim

// The device backend suite: the same tests for every backend (sim everywhere; cuda where a device
// exists, ctest label `gpu`, skipped with a message elsewhere).
#include <gtest/gtest.h>
#include <prism/gpu/backend.h>
#include <prism/gpu/ops.h>
#include <prism/gpu/tensor.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <stdexcept>
#include <vector>

#include "gpu/must.h"

extern char** environ;

namespace prism::gpu {
namespace {

using prism::testing::Must;

std::string Hex(const std::string& bytes) {
  std::string hex;
  for (unsigned char c : bytes) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", c);
    hex += buf;
  }
  return hex;
}
std::string Unhex(const char* hex) {
  std::string out;
  for (size_t i = 0; hex[i] && hex[i + 1]; i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  return out;
}
// Runs this binary's tests matching `filter` in a child with `env` added; true if they passed.
bool RunChild(const std::string& filter, const std::vector<std::string>& add) {
  std::vector<std::string> env_strings = add;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string f = "--gtest_filter=" + filter;
  char* argv[] = {const_cast<char*>("/proc/self/exe"), f.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return false;
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    BackendConfig config;
    config.kind = GetParam();
    config.topology = "h100-sxm-8";
    auto b = CreateBackend(config);
    if (!b.ok()) {
      if (GetParam() == "cuda") GTEST_SKIP() << "no CUDA device here: " << b.status().ToString();
      FAIL() << b.status().ToString();
    }
    backend_ = std::move(b).value();
    stream_ = Must(backend_->CreateStream(0, "test stream"));
    memory_ = Must(backend_->memory(0));
  }

  DeviceBuffer Alloc(size_t bytes) {
    return Must(DeviceBuffer::Allocate(*memory_, bytes, *stream_));
  }
  template <typename T>
  std::vector<T> ToHost(const DeviceBuffer& b, size_t n) {
    std::vector<T> out(n);
    Must(stream_->CopyAsync(out.data(), b.data(), n * sizeof(T)));
    Must(stream_->Synchronize());
    return out;
  }
  template <typename T>
  DeviceBuffer FromHost(const std::vector<T>& v) {
    DeviceBuffer b = Alloc(v.size() * sizeof(T));
    Must(stream_->CopyAsync(b.data(), v.data(), v.size() * sizeof(T)));
    Must(stream_->Synchronize());  // (v may go away)
    return b;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Stream> stream_;
  MemoryResource* memory_ = nullptr;
};

TEST_P(BackendTest, DevicesHaveUuidsAndBadOrdinalsAreErrors) {
  ASSERT_GT(backend_->device_count(), 0);
  std::set<std::string> uuids;
  for (int d = 0; d < backend_->device_count(); ++d) {
    DeviceInfo info = Must(backend_->device(d));
    EXPECT_EQ(info.ordinal, d);
    EXPECT_EQ(info.uuid.rfind("GPU-", 0), 0u) << info.uuid;
    EXPECT_GT(info.total_memory, 0u);
    uuids.insert(info.uuid);
  }
  EXPECT_EQ(uuids.size(), static_cast<size_t>(backend_->device_count()));
  EXPECT_EQ(backend_->device(-1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->device(backend_->device_count()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(backend_->CreateStream(backend_->device_count(), "x").ok());
  EXPECT_TRUE(backend_->DeviceStatus(0).ok());
}

TEST_P(BackendTest, CopiesRoundTripAndPointersKnowTheirDevice) {
  std::vector<int64_t> host(100000);
  std::iota(host.begin(), host.end(), -5);
  DeviceBuffer d = FromHost(host);
  EXPECT_EQ(backend_->PointerDevice(d.data()), 0);
  EXPECT_EQ(backend_->PointerDevice(host.data()), -1);
  DeviceBuffer d2 = Alloc(d.size());
  Must(stream_->CopyAsync(d2.data(), d.data(), d.size()));
  EXPECT_EQ(ToHost<int64_t>(d2, host.size()), host);
  Must(stream_->MemsetAsync(d2.data(), 0, d2.size()));
  EXPECT_EQ(ToHost<int64_t>(d2, 3), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(d2.device(), 0);
}

TEST_P(BackendTest, OpsComputeWhatTheySay) {
  size_t n = 1000;
  DeviceBuffer x = Alloc(n * sizeof(float)), y = Alloc(n * sizeof(float)),
               out = Alloc(sizeof(float));
  DeviceArray ax{x.data(), DType::kFloat32, n, 0}, ay{y.data(), DType::kFloat32, n, 0};
  DeviceArray aout{out.data(), DType::kFloat32, 1, 0};
  Must(ops::Fill(*backend_, *stream_, ax, 2.0f));
  Must(ops::Fill(*backend_, *stream_, ay, 1.0f));
  Must(ops::Axpy(*backend_, *stream_, 3.0, ax, ay));  // y = 7
  Must(ops::Scale(*backend_, *stream_, 0.5, ay));     // y = 3.5
  Must(ops::Reduce(*backend_, *stream_, ReduceOp::kSum, ay, aout));
  EXPECT_FLOAT_EQ(ToHost<float>(out, 1)[0], 3500.0f);
  Must(ops::Reduce(*backend_, *stream_, ReduceOp::kMax, ax, aout));
  EXPECT_FLOAT_EQ(ToHost<float>(out, 1)[0], 2.0f);

  // Integer reductions are exact, past what a double holds.
  std::vector<int64_t> big{int64_t(1) << 60, 3, -7, 1};
  DeviceBuffer b = FromHost(big), bout = Alloc(sizeof(int64_t));
  DeviceArray abig{b.data(), DType::kInt64, big.size(), 0}, abo{bout.data(), DType::kInt64, 1, 0};
  Must(ops::Reduce(*backend_, *stream_, ReduceOp::kSum, abig, abo));
  EXPECT_EQ(ToHost<int64_t>(bout, 1)[0], (int64_t(1) << 60) - 3);
  Must(ops::Reduce(*backend_, *stream_, ReduceOp::kMin, abig, abo));
  EXPECT_EQ(ToHost<int64_t>(bout, 1)[0], -7);

  // Half precision: fill and sum through the device's own format.
  DeviceBuffer h = Alloc(64 * 2), hout = Alloc(2);
  DeviceArray ah{h.data(), DType::kFloat16, 64, 0}, aho{hout.data(), DType::kFloat16, 1, 0};
  Must(ops::Fill(*backend_, *stream_, ah, 0.5));
  Must(ops::Reduce(*backend_, *stream_, ReduceOp::kSum, ah, aho));
  EXPECT_EQ(ToHost<uint16_t>(hout, 1)[0], 0x5000) << "32.0 in IEEE half";

  // Bad arguments are errors, not crashes.
  EXPECT_EQ(ops::Axpy(*backend_, *stream_, 1, ax, abig).code(), StatusCode::kInvalidArgument);
  std::vector<float> host(4);
  DeviceArray on_host{host.data(), DType::kFloat32, 4, 0};
  EXPECT_EQ(ops::Fill(*backend_, *stream_, on_host, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ops::Reduce(*backend_, *stream_, ReduceOp::kSum, ax, ay).code(),
            StatusCode::kInvalidArgument);
}

TEST_P(BackendTest, MatmulMatchesAReference) {
  for (DType t : {DType::kFloat32, DType::kFloat64}) {
    size_t m = 7, n = 5, k = 13;
    std::vector<double> a(m * k), b(k * n), want(m * n, 0);
    for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(double(i));
    for (size_t i = 0; i < b.size(); ++i) b[i] = std::cos(double(i)) * 0.5;
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < n; ++j)
        for (size_t p = 0; p < k; ++p) want[i * n + j] += a[i * k + p] * b[p * n + j];
    auto as = [&](const std::vector<double>& v) {
      if (t == DType::kFloat64) return FromHost(v);
      return FromHost(std::vector<float>(v.begin(), v.end()));
    };
    DeviceBuffer da = as(a), db = as(b), dc = Alloc(m * n * DTypeSize(t));
    Must(ops::Matmul(*backend_, *stream_, {da.data(), t, m * k, 0}, {db.data(), t, k * n, 0},
                     {dc.data(), t, m * n, 0}, m, n, k));
    std::vector<double> got(m * n);
    if (t == DType::kFloat64) {
      got = ToHost<double>(dc, m * n);
    } else {
      auto f = ToHost<float>(dc, m * n);
      got.assign(f.begin(), f.end());
    }
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << i;
    EXPECT_EQ(ops::Matmul(*backend_, *stream_, {da.data(), t, m * k, 0}, {db.data(), t, k * n, 0},
                          {dc.data(), t, m * n, 0}, m, n, k + 1)
                  .code(),
              StatusCode::kInvalidArgument);
  }
}

TEST_P(BackendTest, EventsOrderStreams) {
  auto other = Must(backend_->CreateStream(0, "consumer"));
  auto never = Must(backend_->CreateEvent(0));
  EXPECT_TRUE(Must(never->Query())) << "an event never recorded is complete, as in CUDA";
  Must(never->Synchronize());
  Must(other->Wait(*never));

  size_t n = 1 << 16;
  DeviceBuffer x = Alloc(n * sizeof(float)), sum = Alloc(sizeof(float));
  auto ready = Must(backend_->CreateEvent(0));
  for (int round = 0; round < 20; ++round) {
    Must(ops::Fill(*backend_, *stream_, {x.data(), DType::kFloat32, n, 0}, round));
    Must(ready->Record(*stream_));
    Must(other->Wait(*ready));
    Must(ops::Reduce(*backend_, *other, ReduceOp::kSum, {x.data(), DType::kFloat32, n, 0},
                     {sum.data(), DType::kFloat32, 1, 0}));
    auto done = Must(backend_->CreateEvent(0));
    Must(done->Record(*other));
    Must(stream_->Wait(*done));  // the next fill waits for this read
    float got = 0;
    Must(stream_->CopyAsync(&got, sum.data(), sizeof got));
    Must(stream_->Synchronize());
    EXPECT_FLOAT_EQ(got, float(round) * n);
  }
  EXPECT_TRUE(Must(other->Query()));
}

TEST_P(BackendTest, TimingEventsMeasureAndOthersRefuse) {
  auto start = Must(backend_->CreateEvent(0, /*timing=*/true));
  auto end = Must(backend_->CreateEvent(0, true));
  DeviceBuffer x = Alloc(64 << 20);
  Must(start->Record(*stream_));
  Must(stream_->MemsetAsync(x.data(), 1, x.size()));
  Must(end->Record(*stream_));
  Must(end->Synchronize());
  double ms = Must(end->ElapsedSince(*start));
  EXPECT_GT(ms, 0.0);
  EXPECT_LT(ms, 1000.0);
  auto plain = Must(backend_->CreateEvent(0, false));
  Must(plain->Record(*stream_));
  Must(plain->Synchronize());
  EXPECT_FALSE(plain->ElapsedSince(*start).ok());
}

TEST_P(BackendTest, OutOfMemoryAndLimitsAreErrorsInTheCallerOnly) {
  DeviceInfo info = Must(backend_->device(0));
  auto too_big = memory_->Allocate(info.total_memory + (1ull << 30), *stream_);
  EXPECT_EQ(too_big.status().code(), StatusCode::kOutOfMemory) << too_big.status().ToString();
  uint64_t before = memory_->bytes_in_use();
  {
    DeviceBuffer a = Alloc(1 << 20);
    EXPECT_GE(memory_->bytes_in_use(), before + (1 << 20));
    memory_->set_limit(memory_->bytes_in_use() + (2 << 20));
    EXPECT_EQ(memory_->limit(), memory_->bytes_in_use() + (2 << 20));
    auto over = memory_->Allocate(3 << 20, *stream_);
    EXPECT_EQ(over.status().code(), StatusCode::kOutOfMemory);
    EXPECT_NE(over.status().message().find("gpu_memory"), std::string::npos)
        << over.status().message();
    DeviceBuffer fits = Alloc(1 << 20);  // still usable after the refusal
    memory_->set_limit(std::nullopt);
  }
  Must(stream_->Synchronize());
  EXPECT_EQ(memory_->bytes_in_use(), before);
  EXPECT_TRUE(backend_->DeviceStatus(0).ok());
}

TEST_P(BackendTest, DeviceBufferFreesOnItsStream) {
  DeviceBuffer a = Alloc(4096);
  DeviceBuffer b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_NE(b.data(), nullptr);
  Must(b.Free());
  EXPECT_EQ(b.data(), nullptr);
  Must(b.Free());  // twice is a no-op
  EXPECT_FALSE(memory_->Deallocate(reinterpret_cast<void*>(0x1000), 16, *stream_).ok());
}

TEST_P(BackendTest, PeerCopiesBetweenDevices) {
  if (backend_->device_count() < 2) GTEST_SKIP() << "one device";
  auto s1 = Must(backend_->CreateStream(1, "peer"));
  MemoryResource* m1 = Must(backend_->memory(1));
  std::vector<int32_t> host(1 << 18);
  std::iota(host.begin(), host.end(), 1);
  DeviceBuffer d0 = FromHost(host);
  DeviceBuffer d1 = Must(DeviceBuffer::Allocate(*m1, d0.size(), *s1));
  Must(s1->Synchronize());  // d1 ready, d0 written (host sync orders both)
  Must(s1->CopyAsync(d1.data(), d0.data(), d0.size()));
  std::vector<int32_t> back(host.size());
  Must(s1->CopyAsync(back.data(), d1.data(), d1.size()));
  Must(s1->Synchronize());
  EXPECT_EQ(back, host);
  EXPECT_EQ(backend_->PointerDevice(d1.data()), 1);
  auto e0 = Must(backend_->CreateEvent(0));
  EXPECT_EQ(e0->Record(*s1).code(), StatusCode::kInvalidArgument)
      << "an event of device 0 on device 1's stream";
}

TEST_P(BackendTest, TensorsRoundTripThroughDLPackWithoutCopies) {
  Tensor t = Must(Tensor::Empty(*backend_, *memory_, *stream_, DType::kFloat32, {3, 5}));
  EXPECT_EQ(t.count(), 15u);
  EXPECT_EQ(t.bytes(), 60u);
  Must(ops::Fill(*backend_, *stream_, t.array(), 1.5));
  auto other = Must(backend_->CreateStream(0, "consumer"));
  DLManagedTensorVersioned* view = Must(t.ToDLPack(*backend_, other.get(), /*read_only=*/true));
  EXPECT_EQ(view->version.major, 1u);
  EXPECT_TRUE(view->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  EXPECT_EQ(view->dl_tensor.ndim, 2);
  EXPECT_EQ(view->dl_tensor.shape[0], 3);
  EXPECT_EQ(view->dl_tensor.strides[0], 5);
  EXPECT_EQ(view->dl_tensor.strides[1], 1);
  EXPECT_EQ(view->dl_tensor.dtype.code, kDLFloat);
  EXPECT_EQ(view->dl_tensor.device.device_type, GetParam() == "sim" ? kDLCPU : kDLCUDA);
  EXPECT_EQ(view->dl_tensor.data, t.data());
  // The consumer stream was made to wait for the fill: reading there is ordered.
  std::vector<float> host(15);
  Must(other->CopyAsync(host.data(), view->dl_tensor.data, 60));
  Must(other->Synchronize());
  EXPECT_EQ(host, std::vector<float>(15, 1.5f));
  // Back into prism: the memory is prism's, so no copy; the view keeps it alive.
  void* data = t.data();
  Tensor back = Must(Tensor::FromDLPack(view, *backend_, *memory_, *stream_));
  EXPECT_EQ(back.data(), data);
  EXPECT_FALSE(back.copied_in());
  EXPECT_EQ(back.shape(), (std::vector<int64_t>{3, 5}));
  t = Tensor();  // the original goes; `back` still holds the memory
  Must(stream_->CopyAsync(host.data(), back.data(), 60));
  Must(stream_->Synchronize());
  EXPECT_EQ(host[14], 1.5f);
}

TEST_P(BackendTest, MemoryPrismDidNotAllocateIsCopiedIn) {
  // A host array handed over by DLPack (what numpy would give): copied into device memory.
  struct Host {
    std::vector<int64_t> values{1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    DLManagedTensorVersioned m{};
    bool deleted = false;
  } h;
  h.m.version = {1, 0};
  h.m.manager_ctx = &h;
  h.m.deleter = [](DLManagedTensorVersioned* self) {
    static_cast<Host*>(self->manager_ctx)->deleted = true;
  };
  h.m.dl_tensor.data = h.values.data();
  h.m.dl_tensor.device = {kDLCPU, 0};
  h.m.dl_tensor.ndim = 2;
  h.m.dl_tensor.dtype = {kDLInt, 64, 1};
  h.m.dl_tensor.shape = h.shape;
  Tensor t = Must(Tensor::FromDLPack(&h.m, *backend_, *memory_, *stream_));
  EXPECT_TRUE(t.copied_in());
  EXPECT_TRUE(h.deleted) << "the producer's deleter ran once the copy was done";
  EXPECT_NE(t.data(), static_cast<void*>(h.values.data()));
  EXPECT_EQ(backend_->PointerDevice(t.data()), 0);
  std::vector<int64_t> back(6);
  Must(stream_->CopyAsync(back.data(), t.data(), 48));
  Must(stream_->Synchronize());
  EXPECT_EQ(back, h.values);
  // What prism cannot take: other dtypes, strided views, other versions.
  Host bad;
  bad.m = h.m;
  bad.m.manager_ctx = &bad;
  bad.m.dl_tensor.data = bad.values.data();
  bad.m.dl_tensor.shape = bad.shape;
  bad.m.dl_tensor.dtype = {kDLComplex, 64, 1};
  EXPECT_EQ(Tensor::FromDLPack(&bad.m, *backend_, *memory_, *stream_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(bad.deleted) << "refused tensors are released too";
  Host strided;
  strided.m = h.m;
  strided.m.manager_ctx = &strided;
  strided.m.dl_tensor.shape = strided.shape;
  int64_t strides[2] = {1, 2};  // column-major
  strided.m.dl_tensor.strides = strides;
  EXPECT_NE(Tensor::FromDLPack(&strided.m, *backend_, *memory_, *stream_)
                .status()
                .message()
                .find("contiguous"),
            std::string::npos);
  Host old;
  old.m = h.m;
  old.m.manager_ctx = &old;
  old.m.version = {0, 8};
  EXPECT_FALSE(Tensor::FromDLPack(&old.m, *backend_, *memory_, *stream_).ok());
  EXPECT_FALSE(Tensor::Empty(*backend_, *memory_, *stream_, DType::kFloat32, {2, -1}).ok());
}

// A fault poisons the device for the process (sticky), so it runs in a child process.
TEST_P(BackendTest, AFaultingKernelIsStickyForTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Status trap = backend_->kernels().Trap(*stream_);
        Status sync = stream_->Synchronize();
        bool sticky = !backend_->DeviceStatus(0).ok() && !backend_->CreateStream(0, "after").ok() &&
                      !memory_->Allocate(16, *stream_).ok();
        std::fprintf(stderr, "trap=%s sync=%s sticky=%d\n", trap.ToString().c_str(),
                     sync.ToString().c_str(), sticky);
        std::_Exit(!sync.ok() && sticky ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// A shared event orders work across processes without host waits: the child's stream waits on
// the parent's event, then reads what the parent's kernel wrote (16 MiB, so it takes a while).
TEST_P(BackendTest, SharedEventsOrderWorkAcrossProcesses) {
  size_t n = 4 << 20;
  DeviceBuffer d = Alloc(n * sizeof(int32_t));
  Must(stream_->Synchronize());
  auto ready = Must(backend_->CreateIpcEvent(0));
  IpcHandle mem = Must(memory_->Export(d.data(), d.size()));
  IpcEventHandle ev = Must(ready->Export());
  // Seven fills (the last writes 7): long enough on sim that a child not waiting would see less.
  for (int v = 1; v <= 7; ++v)
    Must(ops::Fill(*backend_, *stream_, {d.data(), DType::kInt32, n, 0}, v));
  Must(ready->Record(*stream_));  // no host sync: the child's stream waits for it
  ASSERT_TRUE(RunChild(
      "IpcChild.WaitsOnTheParentsEvent",
      {"PRISM_TEST_IPC_HANDLE=" + Hex(mem.bytes), "PRISM_TEST_IPC_EVENT=" + Hex(ev.bytes),
       "PRISM_TEST_IPC_COUNT=" + std::to_string(n), "PRISM_TEST_IPC_BACKEND=" + GetParam()}));
  auto plain = Must(backend_->CreateEvent(0));
  EXPECT_FALSE(plain->Export().ok()) << "only shared events export";
  EXPECT_FALSE(backend_->OpenIpcEvent(IpcEventHandle{"garbage"}).ok());
}

// The backend a child process of the IPC tests uses: the parent's kind.
std::unique_ptr<Backend> ChildBackend() {
  BackendConfig config;
  config.kind = std::getenv("PRISM_TEST_IPC_BACKEND");
  config.topology = "h100-sxm-8";
  return Must(CreateBackend(config));
}

TEST(IpcChild, WaitsOnTheParentsEvent) {
  const char* hex = std::getenv("PRISM_TEST_IPC_EVENT");
  if (!hex) GTEST_SKIP() << "run by SharedEventsOrderWorkAcrossProcesses";
  size_t n = std::stoul(std::getenv("PRISM_TEST_IPC_COUNT"));
  auto backend = ChildBackend();
  auto stream = Must(backend->CreateStream(0, "child"));
  auto event = Must(backend->OpenIpcEvent(IpcEventHandle{Unhex(hex)}));
  void* p = Must(backend->OpenIpc(IpcHandle{Unhex(std::getenv("PRISM_TEST_IPC_HANDLE"))}, 0));
  EXPECT_FALSE(event->Record(*stream).ok()) << "an imported event is not recorded here";
  Must(stream->Wait(*event));
  std::vector<int32_t> got(n);
  Must(stream->CopyAsync(got.data(), p, n * 4));
  Must(stream->Synchronize());
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ(got[i], 7) << i;
  ASSERT_EQ(got[n - 1], 7);
  EXPECT_TRUE(Must(event->Query()));
  Must(backend->CloseIpc(p));
}

// IPC: a child process (this binary, re-run) maps the parent's export, checks the data and writes
// its answer into the same memory.
TEST_P(BackendTest, MemoryExportedToAnotherProcess) {
  size_t n = 4096;
  std::vector<int32_t> host(n);
  std::iota(host.begin(), host.end(), 100);
  DeviceBuffer d = FromHost(host);
  IpcHandle h = Must(memory_->Export(d.data(), d.size()));
  ASSERT_TRUE(RunChild(
      "IpcChild.NegatesTheParentsData",
      {"PRISM_TEST_IPC_HANDLE=" + Hex(h.bytes), "PRISM_TEST_IPC_COUNT=" + std::to_string(n),
       "PRISM_TEST_IPC_BACKEND=" + GetParam()}))
      << "the child failed";
  auto back = ToHost<int32_t>(d, n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], -host[i]) << i;
  EXPECT_FALSE(backend_->OpenIpc(h, 0).ok()) << "opening one's own export is refused, as in CUDA";
  EXPECT_FALSE(backend_->OpenIpc(IpcHandle{"garbage"}, 0).ok());
}

TEST(IpcChild, NegatesTheParentsData) {
  const char* hex = std::getenv("PRISM_TEST_IPC_HANDLE");
  if (!hex) GTEST_SKIP() << "run by MemoryExportedToAnotherProcess";
  IpcHandle h{Unhex(hex)};
  size_t n = std::stoul(std::getenv("PRISM_TEST_IPC_COUNT"));
  auto backend = ChildBackend();
  auto stream = Must(backend->CreateStream(0, "child"));
  void* p = Must(backend->OpenIpc(h, 0));
  std::vector<int32_t> got(n);
  Must(stream->CopyAsync(got.data(), p, n * 4));
  Must(stream->Synchronize());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], int32_t(100 + i));
  for (auto& v : got) v = -v;
  Must(stream->CopyAsync(p, got.data(), n * 4));
  Must(stream->Synchronize());
  Must(backend->CloseIpc(p));
  EXPECT_FALSE(backend->CloseIpc(p).ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values("sim", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace prism::gpu

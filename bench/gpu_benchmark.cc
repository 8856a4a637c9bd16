// The GPU benchmark: transfers through prism's device layer next to the raw copy of the same
// bytes, a chain of tiny kernels ordered by events next to the same chain with a host sync after
// each, and placement quality on every shipped topology profile. Every measurement checks its
// result. On sim, device times come from the sim's virtual clock (modelled bandwidths of the
// profile) and are labelled as such; on cuda they are measured with CUDA events.
#include <prism/gpu.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "base/device_placement.h"
#include "base/resources.h"
#include "bench/raw_cuda.h"

namespace gpu = prism::gpu;

namespace {

template <typename T>
T Must(prism::Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  return std::move(r).value();
}
void Must(const prism::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Setup {
  std::unique_ptr<gpu::Backend> backend;
  bool modelled = false;  // sim: device times are the virtual clock's
};

// Times `reps` runs of `body` on `stream` between two timing events (device time), in seconds
// per run.
template <typename F>
double DeviceSeconds(Setup& s, gpu::Stream& stream, int reps, F body) {
  auto start = Must(s.backend->CreateEvent(stream.device(), true));
  auto end = Must(s.backend->CreateEvent(stream.device(), true));
  body();  // warm-up
  Must(stream.Synchronize());
  Must(start->Record(stream));
  for (int i = 0; i < reps; ++i) body();
  Must(end->Record(stream));
  Must(end->Synchronize());
  return Must(end->ElapsedSince(*start)) / 1e3 / reps;
}

// Wall-clock seconds per run of `body` (already warmed up), until `stream` is done.
template <typename F>
double WallSeconds(gpu::Stream& stream, int reps, F body) {
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) body();
  Must(stream.Synchronize());
  return Seconds(Clock::now() - t0) / reps;
}

void Transfers(Setup& s, const std::vector<size_t>& sizes, int reps) {
  gpu::Backend& b = *s.backend;
  auto stream = Must(b.CreateStream(0, "bench"));
  gpu::MemoryResource& mem = *Must(b.memory(0));
  std::printf(
      "\n## Transfers on device 0: prism's device layer vs raw copies of the same bytes (%s)\n",
      s.modelled
          ? "sim: wall clock of the host bytes moved; the modelled link is the virtual clock's"
          : "cuda: device time from events; medians of 5 rounds, prism and raw in turn");
  std::printf("%-10s %-10s %12s %12s %8s %14s  %s\n", "size", "path", "prism GB/s", "raw GB/s",
              "ratio", s.modelled ? "modelled GB/s" : "", "check");
  for (size_t bytes : sizes) {
    gpu::DeviceBuffer a = Must(gpu::DeviceBuffer::Allocate(mem, bytes, *stream));
    gpu::DeviceBuffer c = Must(gpu::DeviceBuffer::Allocate(mem, bytes, *stream));
    std::vector<uint8_t> host(bytes), back(bytes);
    for (size_t i = 0; i < bytes; ++i) host[i] = static_cast<uint8_t>(i * 131 + 7);
    struct Path {
      const char* name;
      void* dst;
      const void* src;
      RawCopyKind raw;
    } paths[] = {{"host->dev", a.data(), host.data(), RawCopyKind::kHostToDevice},
                 {"dev->dev", c.data(), a.data(), RawCopyKind::kDeviceToDevice},
                 {"dev->host", back.data(), c.data(), RawCopyKind::kDeviceToHost}};
    for (const Path& p : paths) {
      auto copy = [&] { Must(stream->CopyAsync(p.dst, p.src, bytes)); };
      // Five rounds, prism's and raw's copies in turn, each side's median: host-memory paths on a
      // shared machine drift between samples, and one sample of each compares two moments.
      std::vector<double> device_secs, secs, raws;
      for (int round = 0; round < 5; ++round) {
        double device_sec = DeviceSeconds(s, *stream, reps, copy);
        // Wall clock per copy, after the warm-up (first touches of fresh memory are not copies).
        double wall_sec = WallSeconds(*stream, reps, copy);
        device_secs.push_back(device_sec);
        secs.push_back(s.modelled ? wall_sec : device_sec);
        raws.push_back(s.modelled ? RawHostCopySeconds(bytes, reps)
                                  : RawCudaCopySeconds(p.raw, bytes, reps));
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      double device_sec = median(device_secs), sec = median(secs), raw = median(raws);
      bool ok =
          p.raw != RawCopyKind::kDeviceToHost || std::memcmp(host.data(), back.data(), bytes) == 0;
      std::string modelled =
          s.modelled ? std::to_string(static_cast<int>(bytes / device_sec / 1e9)) : "";
      std::printf("%-10s %-10s %12.1f %12.1f %7.0f%% %14s  %s\n",
                  (std::to_string(bytes >> 20) + " MiB").c_str(), p.name, bytes / sec / 1e9,
                  raw > 0 ? bytes / raw / 1e9 : 0.0, raw > 0 ? 100.0 * raw / sec : 0.0,
                  modelled.c_str(), ok ? "ok" : "WRONG");
      if (!ok) throw std::runtime_error("the data did not survive the round trip");
    }
  }
  std::printf("(raw: %s; target: prism >= 90%% of raw at 64 MiB and above)\n",
              s.modelled ? "memcpy between two host buffers, which is what sim device memory is"
                         : "cudaMemcpyAsync on a plain stream between buffers of the same kinds");
}

// Device memory exported to a child process that maps it (IPC) and copies it, into its own device
// memory and out to the host: the bytes a consumer process reads, against the same copies done in
// the producer. Each figure is the median of 5 rounds of `reps` copies.
struct IpcRates {
  double to_device = 0, to_host = 0;  // GB/s
};

IpcRates MeasureReads(Setup& s, gpu::Stream& stream, const void* src, size_t bytes) {
  gpu::Backend& b = *s.backend;
  gpu::DeviceBuffer local = Must(gpu::DeviceBuffer::Allocate(*Must(b.memory(0)), bytes, stream));
  std::vector<uint8_t> host(bytes, 1);
  auto rate = [&](void* dst) {
    std::vector<double> rounds;
    for (int r = 0; r < 5; ++r) {
      auto copy = [&] { Must(stream.CopyAsync(dst, src, bytes)); };
      double sec = s.modelled ? WallSeconds(stream, 4, copy) : DeviceSeconds(s, stream, 4, copy);
      rounds.push_back(bytes / sec / 1e9);
    }
    std::sort(rounds.begin(), rounds.end());
    return rounds[rounds.size() / 2];
  };
  IpcRates out;
  out.to_device = rate(local.data());
  out.to_host = rate(host.data());
  if (!std::all_of(host.begin(), host.end(), [](uint8_t v) { return v == 42; })) {
    throw std::runtime_error("the IPC read returned the wrong bytes");
  }
  return out;
}

void Ipc(Setup& s, size_t bytes, const std::string& self) {
  gpu::Backend& b = *s.backend;
  auto stream = Must(b.CreateStream(0, "bench ipc"));
  gpu::DeviceBuffer a = Must(gpu::DeviceBuffer::Allocate(*Must(b.memory(0)), bytes, *stream));
  Must(b.kernels().Fill(*stream, gpu::DType::kUInt8, a.data(), bytes, 42));
  Must(stream->Synchronize());
  gpu::IpcHandle h = Must(Must(b.memory(0))->Export(a.data(), bytes));
  int pipefd[2];
  if (pipe(pipefd) != 0) throw std::runtime_error("pipe");
  std::string hex;
  for (unsigned char ch : h.bytes) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", ch);
    hex += buf;
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    execl(self.c_str(), self.c_str(), "--ipc-child", hex.c_str(), "--backend",
          std::string(b.name()).c_str(), "--size", std::to_string(bytes).c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pipefd[1]);
  char out[256] = {};
  ssize_t n = read(pipefd[0], out, sizeof out - 1);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("the IPC child failed");
  IpcRates child;
  if (std::sscanf(out, "%lf %lf", &child.to_device, &child.to_host) != 2)
    throw std::runtime_error("the IPC child said nothing");
  IpcRates mine = MeasureReads(s, *stream, a.data(), bytes);
  std::printf(
      "\n## IPC: %zu MiB exported to another process and read there, vs the same reads in the "
      "producer%s\n",
      bytes >> 20, s.modelled ? " [sim: wall clock]" : "");
  std::printf("consumer process dev->dev %.1f GB/s, producer %.1f GB/s (%.0f%%)\n", child.to_device,
              mine.to_device, 100.0 * child.to_device / mine.to_device);
  std::printf("consumer process dev->host %.1f GB/s, producer %.1f GB/s (%.0f%%)\n", child.to_host,
              mine.to_host, 100.0 * child.to_host / mine.to_host);
}

int IpcChild(const std::string& hex, const std::string& backend, size_t bytes) {
  gpu::BackendConfig c = gpu::BackendConfigFromEnv();
  c.kind = backend;
  Setup s{Must(gpu::CreateBackend(c)), backend == "sim"};
  gpu::IpcHandle h;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    h.bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  void* p = Must(s.backend->OpenIpc(h, 0));
  auto stream = Must(s.backend->CreateStream(0, "ipc child"));
  IpcRates r = MeasureReads(s, *stream, p, bytes);
  Must(s.backend->CloseIpc(p));
  std::printf("%f %f\n", r.to_device, r.to_host);
  return 0;
}

// 100 tiny dependent kernels alternating between two streams: ordered by events (no host
// waits), or by a host synchronization after each.
void Chain(Setup& s, int length) {
  gpu::Backend& b = *s.backend;
  auto s0 = Must(b.CreateStream(0, "chain a"));
  auto s1 = Must(b.CreateStream(0, "chain b"));
  gpu::MemoryResource& mem = *Must(b.memory(0));
  gpu::DeviceBuffer x = Must(gpu::DeviceBuffer::Allocate(mem, sizeof(float), *s0));
  gpu::DeviceArray ax{x.data(), gpu::DType::kFloat32, 1, 0};
  std::vector<std::unique_ptr<gpu::Event>> events;
  for (int i = 0; i < length; ++i) events.push_back(Must(b.CreateEvent(0)));
  Must(s0->Synchronize());
  auto run = [&](bool host_sync) {
    int syncs = 0;
    Must(gpu::ops::Fill(b, *s0, ax, 0));
    Must(events[0]->Record(*s0));
    auto t0 = Clock::now();
    Clock::duration submitted{};
    for (int i = 0; i < length; ++i) {
      gpu::Stream& on = i % 2 ? *s1 : *s0;
      gpu::Stream& prev = i % 2 ? *s0 : *s1;
      if (host_sync) {
        Must(prev.Synchronize());
        ++syncs;
      } else if (i > 0) {
        Must(on.Wait(*events[i - 1]));
      }
      Must(gpu::ops::Scale(b, on, 2.0, ax));
      Must(gpu::ops::Fill(b, on, ax, i + 1));
      Must(events[i]->Record(on));
    }
    submitted = Clock::now() - t0;
    Must(events[length - 1]->Synchronize());
    double sec = Seconds(Clock::now() - t0);
    float got = 0;
    Must(s0->Wait(*events[length - 1]));
    Must(s0->CopyAsync(&got, x.data(), sizeof got));
    Must(s0->Synchronize());
    if (got != static_cast<float>(length))
      throw std::runtime_error("the chain computed the wrong value");
    return std::make_tuple(sec, syncs, Seconds(submitted));
  };
  run(false);  // warm-up
  auto [events_sec, events_syncs, events_submit] = run(false);
  auto [sync_sec, sync_syncs, sync_submit] = run(true);
  std::printf(
      "\n## A chain of %d tiny dependent steps (2 kernels each) on two streams, wall clock\n",
      length);
  std::printf(
      "ordered by events: %8.3f ms to the end, the caller busy %7.3f ms, %d host syncs in the "
      "chain\n",
      events_sec * 1e3, events_submit * 1e3, events_syncs);
  std::printf("host sync each:    %8.3f ms to the end, the caller busy %7.3f ms, %d host syncs\n",
              sync_sec * 1e3, sync_submit * 1e3, sync_syncs);
  std::printf("events are %.1fx faster (target >= 3x)%s\n", sync_sec / events_sec,
              s.modelled ? "  [sim: host threads stand in for the device]" : "");
  if (s.modelled) return;
  // The floor: the same chain written directly against the CUDA runtime, in this run.
  RawChainSeconds raw = RawCudaChain(length);
  if (raw.events > 0 && raw.host_sync > 0) {
    std::printf(
        "raw CUDA, same chain: events %.3f ms, host sync each %.3f ms: %.1fx (the floor for the "
        "ratio); "
        "prism's event chain at %.0f%% of raw's speed\n",
        raw.events * 1e3, raw.host_sync * 1e3, raw.host_sync / raw.events,
        100.0 * raw.events / events_sec);
  } else if (raw.events < 0 || raw.host_sync < 0) {
    throw std::runtime_error("the raw CUDA chain computed the wrong value");
  }
}

void Placement() {
  std::printf(
      "\n## Placement quality: the scheduler's k-GPU set vs the best of every k-subset "
      "(exhaustive)\n");
  std::printf("%-16s %3s %14s %14s %12s\n", "profile", "k", "slowest link", "best possible",
              "sets tried");
  for (const std::string& name : gpu::Topology::ProfileNames()) {
    gpu::Topology t = Must(gpu::Topology::Load(name));
    prism::DeviceGraph g{t.BandwidthMatrix(), t.NvLinkMatrix()};
    for (int k : {2, 4, 8}) {
      if (k > t.gpu_count()) continue;
      auto pool = Must(prism::ResourcePool::Create(
          Must(prism::ResourceSet::FromUnits({{"GPU", double(t.gpu_count())}}))));
      Must(pool.SetDeviceGraph(prism::kGpu, g));
      // Half the node is taken by single-GPU requests first (a fragmenting sequence).
      for (int i = 0; i < t.gpu_count() / 2 - (k > t.gpu_count() / 2 ? t.gpu_count() / 2 : 0);
           ++i) {
        (void)pool.Allocate(Must(prism::ResourceSet::FromUnits({{"GPU", 1}})));
      }
      std::vector<int> free;
      for (const auto& [i, f] : pool.Instances(prism::kGpu))
        if (f == prism::kMilli) free.push_back(i);
      auto got = pool.Allocate(Must(prism::ResourceSet::FromUnits({{"GPU", double(k)}})));
      double best = 0;
      int tried = 0;
      for (unsigned m = 0; m < (1u << t.gpu_count()); ++m) {
        if (__builtin_popcount(m) != k) continue;
        bool ok = true;
        for (int i = 0; i < t.gpu_count(); ++i)
          if ((m >> i & 1) && std::find(free.begin(), free.end(), i) == free.end()) ok = false;
        if (!ok) continue;
        ++tried;
        double slowest = 1e300;
        for (int a = 0; a < t.gpu_count(); ++a)
          for (int c = a + 1; c < t.gpu_count(); ++c)
            if ((m >> a & 1) && (m >> c & 1)) slowest = std::min(slowest, t.Bandwidth(a, c));
        best = std::max(best, slowest);
      }
      double mine = 0;
      if (got) {
        auto ids = got->Indices(prism::kGpu);
        mine = 1e300;
        for (size_t a = 0; a < ids.size(); ++a)
          for (size_t c = a + 1; c < ids.size(); ++c)
            mine = std::min(mine, t.Bandwidth(ids[a], ids[c]));
      }
      std::printf("%-16s %3d %11.0f GB/s %11.0f GB/s %12d%s\n", name.c_str(), k, mine, best, tried,
                  got && mine + 1e-9 >= best ? "" : "  WORSE");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prism GPU benchmark"};
  std::string backend = "sim", ipc_child;
  std::vector<size_t> sizes{64ull << 20, 256ull << 20};
  size_t size = 0;
  int reps = 5, chain = 100;
  app.add_option("--backend", backend, "sim or cuda");
  app.add_option("--sizes", sizes, "transfer sizes in bytes");
  app.add_option("--reps", reps, "copies per measurement");
  app.add_option("--chain", chain, "length of the dependent chain");
  app.add_option("--ipc-child", ipc_child)->group("");
  app.add_option("--size", size)->group("");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!ipc_child.empty()) return IpcChild(ipc_child, backend, size);
    gpu::BackendConfig c = gpu::BackendConfigFromEnv();
    c.kind = backend;
    Setup s{Must(gpu::CreateBackend(c)), backend == "sim"};
    gpu::DeviceInfo d = Must(s.backend->device(0));
    std::printf("# prism GPU benchmark: backend %s, device 0 = %s (%s), %.0f GiB\n",
                backend.c_str(), d.name.c_str(), d.uuid.c_str(),
                d.total_memory / double(1ull << 30));
    Transfers(s, sizes, reps);
    Ipc(s, sizes.front(), "/proc/self/exe");
    Chain(s, chain);
    Placement();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_benchmark: %s\n", e.what());
    return 1;
  }
  return 0;
}

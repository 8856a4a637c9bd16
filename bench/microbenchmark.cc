// prism's microbenchmark: workloads named as in `ray microbenchmark`, printed as
// "name: value unit" lines (or JSON with --json). Every workload checks its results.
//
// The floors, measured in the same run: the round trip of a 64-byte message over a Unix socket
// between two processes (for task latency), and a plain single-thread memcpy (for put
// bandwidth).
#include <prism/prism.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int Noop(int x) { return x; }
PRISM_REMOTE(Noop);

struct Line {
  std::string name;
  double value;
  std::string unit;
};
std::vector<Line> g_lines;

void Report(const std::string& name, double value, const std::string& unit) {
  g_lines.push_back({name, value, unit});
}

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "microbenchmark: wrong result in %s\n", what);
    std::exit(1);
  }
}

// Two processes ping-pong 64 bytes over a socketpair: the cost of one local round trip.
void RawSocketRoundTrip(int iterations) {
  int sv[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
  pid_t child = fork();
  if (child == 0) {
    close(sv[0]);
    char buf[64];
    for (int i = 0; i < iterations; ++i) {
      size_t got = 0;
      while (got < sizeof(buf)) {
        ssize_t n = read(sv[1], buf + got, sizeof(buf) - got);
        if (n <= 0) _exit(1);
        got += static_cast<size_t>(n);
      }
      if (write(sv[1], buf, sizeof(buf)) != static_cast<ssize_t>(sizeof(buf))) _exit(1);
    }
    _exit(0);
  }
  close(sv[1]);
  char buf[64] = {1};
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(iterations));
  for (int i = 0; i < iterations; ++i) {
    buf[0] = static_cast<char>(i);
    auto t0 = Clock::now();
    Check(write(sv[0], buf, sizeof(buf)) == static_cast<ssize_t>(sizeof(buf)), "raw write");
    size_t got = 0;
    while (got < sizeof(buf)) {
      ssize_t n = read(sv[0], buf + got, sizeof(buf) - got);
      Check(n > 0, "raw read");
      got += static_cast<size_t>(n);
    }
    lat.push_back(Micros(Clock::now() - t0));
    Check(buf[0] == static_cast<char>(i), "raw echo");
  }
  close(sv[0]);
  int status;
  waitpid(child, &status, 0);
  Report("raw unix socket round trip (64 B) p50", Percentile(lat, 0.5), "us");
  Report("raw unix socket round trip (64 B) p99", Percentile(lat, 0.99), "us");
}

// Two processes: one writes 64-byte frames as fast as it can, one write each, the other reads
// whatever arrived and counts. The floor for pipelined (async) task rates: what one
// Unix socket between two processes carries, with no work per frame.
void RawPipelinedFrames(int frames) {
  int sv[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
  pid_t child = fork();
  if (child == 0) {
    close(sv[0]);
    std::vector<char> buf(64 * 1024);
    uint64_t total = 0, want = uint64_t{64} * static_cast<uint64_t>(frames);
    while (total < want) {
      ssize_t n = read(sv[1], buf.data(), buf.size());
      if (n <= 0) _exit(1);
      total += static_cast<uint64_t>(n);
    }
    char ack = 1;
    if (write(sv[1], &ack, 1) != 1) _exit(1);
    _exit(0);
  }
  close(sv[1]);
  // One write per frame, as an engine sends one message per task.
  char frame[64];
  std::memset(frame, 7, sizeof(frame));
  auto start = Clock::now();
  for (int sent = 0; sent < frames; ++sent) {
    Check(write(sv[0], frame, sizeof(frame)) == static_cast<ssize_t>(sizeof(frame)),
          "raw pipelined write");
  }
  char ack = 0;
  Check(read(sv[0], &ack, 1) == 1 && ack == 1, "raw pipelined ack");
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  close(sv[0]);
  int status;
  waitpid(child, &status, 0);
  Report("raw unix socket pipelined frames (64 B, 2 processes)", frames / secs, "frames/s");
}

void SingleClientTasksSync(int n) {
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(n));
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    int v = prism::Get(prism::Task(Noop).Remote(i));
    lat.push_back(Micros(Clock::now() - t0));
    Check(v == i, "single client tasks sync");
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  Report("single client tasks sync", n / secs, "tasks/s");
  Report("single client tasks sync p50", Percentile(lat, 0.5), "us");
  Report("single client tasks sync p99", Percentile(lat, 0.99), "us");
}

void SingleClientTasksAsync(int n) {
  auto start = Clock::now();
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) refs.push_back(prism::Task(Noop).Remote(i));
  auto values = prism::Get(refs);
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  for (int i = 0; i < n; ++i)
    Check(values[static_cast<size_t>(i)] == i, "single client tasks async");
  Report("single client tasks async", n / secs, "tasks/s");
}

// Ray runs n driver-side clients; here n threads of one driver submit concurrently.
void MultiClientTasksAsync(int clients, int n_each) {
  auto start = Clock::now();
  std::vector<std::thread> threads;
  std::vector<int> ok(static_cast<size_t>(clients), 0);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([c, n_each, &ok] {
      std::vector<prism::ObjectRef<int>> refs;
      refs.reserve(static_cast<size_t>(n_each));
      for (int i = 0; i < n_each; ++i) refs.push_back(prism::Task(Noop).Remote(i));
      auto values = prism::Get(refs);
      bool good = true;
      for (int i = 0; i < n_each; ++i) good = good && values[static_cast<size_t>(i)] == i;
      ok[static_cast<size_t>(c)] = good ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  for (int v : ok) Check(v == 1, "multi client tasks async");
  Report("multi client tasks async (" + std::to_string(clients) + " threads)",
         clients * n_each / secs, "tasks/s");
}

void SingleClientTasksAndGetBatch(int batches, int batch) {
  auto start = Clock::now();
  for (int b = 0; b < batches; ++b) {
    std::vector<prism::ObjectRef<int>> refs;
    refs.reserve(static_cast<size_t>(batch));
    for (int i = 0; i < batch; ++i) refs.push_back(prism::Task(Noop).Remote(i));
    auto values = prism::Get(refs);
    Check(values.back() == batch - 1, "single client tasks and get batch");
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  Report("single client tasks and get batch", batches / secs,
         "batches/s (of " + std::to_string(batch) + " tasks)");
}

constexpr uint64_t kMiB = 1 << 20;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class Echoer {
 public:
  int Echo(int x) { return x; }
  int Add(int x, int y) { return x + y; }
};
Echoer* MakeEchoer() { return new Echoer(); }
PRISM_REMOTE(MakeEchoer, &Echoer::Echo, &Echoer::Add);

void ActorCallsSync(int n) {
  auto a = prism::Actor(MakeEchoer).Remote();
  for (int i = 0; i < 100; ++i) prism::Get(a.Task(&Echoer::Echo).Remote(i));  // connect, warm
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(n));
  auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    int v = prism::Get(a.Task(&Echoer::Echo).Remote(i));
    lat.push_back(Micros(Clock::now() - t0));
    Check(v == i, "1:1 actor calls sync");
  }
  double secs = Seconds(Clock::now() - start);
  Report("1:1 actor calls sync", n / secs, "calls/s");
  Report("1:1 actor calls sync p50", Percentile(lat, 0.5), "us");
  Report("1:1 actor calls sync p99", Percentile(lat, 0.99), "us");
}

// Calls `n` times spread over `actors`, then gets them all; returns calls/s.
double CallsAsync(const std::vector<prism::ActorHandle<Echoer>>& actors, int n, bool with_arg) {
  auto arg = prism::Put(1);
  auto start = Clock::now();
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto& a = actors[static_cast<size_t>(i) % actors.size()];
    refs.push_back(with_arg ? a.Task(&Echoer::Add).Remote(arg, i)
                            : a.Task(&Echoer::Echo).Remote(i));
  }
  auto values = prism::Get(refs);
  double secs = Seconds(Clock::now() - start);
  for (int i = 0; i < n; ++i)
    Check(values[static_cast<size_t>(i)] == i + (with_arg ? 1 : 0), "actor calls");
  return n / secs;
}

void ActorCallsAsync(int n) {
  std::vector<prism::ActorHandle<Echoer>> one{prism::Actor(MakeEchoer).Remote()};
  CallsAsync(one, 1000, false);
  Report("1:1 actor calls async", CallsAsync(one, n, false), "calls/s");
  std::vector<prism::ActorHandle<Echoer>> threaded{
      prism::Actor(MakeEchoer).Options({.max_concurrency = 4}).Remote()};
  CallsAsync(threaded, 1000, false);
  Report("1:1 actor calls concurrent (max_concurrency 4)", CallsAsync(threaded, n, false),
         "calls/s");
  std::vector<prism::ActorHandle<Echoer>> many;
  for (int i = 0; i < 4; ++i) many.push_back(prism::Actor(MakeEchoer).Remote());
  CallsAsync(many, 1000, false);
  Report("1:n actor calls async (n = 4)", CallsAsync(many, n, false), "calls/s");
  // n:n: n submitting threads, each calling all n actors.
  for (bool with_arg : {false, true}) {
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) threads.emplace_back([&] { CallsAsync(many, n / 4, with_arg); });
    for (auto& t : threads) t.join();
    Report(std::string("n:n actor calls ") + (with_arg ? "with arg " : "") + "async (n = 4)",
           n / Seconds(Clock::now() - start), "calls/s");
  }
}

// Repeats `body` until `min_seconds` passed (at least `min_reps` times); returns calls/s.
template <typename F>
double Rate(F body, double min_seconds = 1.0, int min_reps = 10) {
  auto start = Clock::now();
  int reps = 0;
  while (reps < min_reps || Seconds(Clock::now() - start) < min_seconds) {
    body();
    reps++;
  }
  return reps / Seconds(Clock::now() - start);
}

// The floor for put bandwidth: one thread copying between two buffers it already touched.
void MemcpyFloor(uint64_t bytes) {
  std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);
  for (int i = 0; i < 2; ++i) std::memcpy(dst.data(), src.data(), bytes);  // warm
  double rate = Rate(
      [&] {
        src[0]++;
        std::memcpy(dst.data(), src.data(), bytes);
        Check(dst[0] == src[0], "memcpy");
      },
      2.0);
  Report("memcpy floor (1 thread, " + std::to_string(bytes / kMiB) + " MiB)",
         rate * static_cast<double>(bytes) / 1e9, "GB/s");
}

void PutGigabytes(uint64_t bytes) {
  std::vector<uint8_t> src(bytes, 2);
  for (int i = 0; i < 2; ++i)
    prism::Put(prism::Buffer::View(src.data(), bytes));  // warm the store's pages
  double rate = Rate(
      [&] {
        src[0]++;
        auto ref = prism::Put(prism::Buffer::View(src.data(), bytes));
        (void)ref;
      },
      2.0);
  Report("single client put gigabytes (" + std::to_string(bytes / kMiB) + " MiB objects)",
         rate * static_cast<double>(bytes) / 1e9, "GB/s");
}

void PutAndGetCalls() {
  Report("single client put calls (inline)", Rate([] { prism::Put(0); }), "calls/s");
  std::vector<uint8_t> blob(128 * 1024, 3);
  Report("single client put calls (object store, 128 KiB)",
         Rate([&] { prism::Put(prism::Buffer::View(blob.data(), blob.size())); }), "calls/s");
  auto small = prism::Put(7);
  Report("single client get calls (inline)", Rate([&] { Check(prism::Get(small) == 7, "get"); }),
         "calls/s");
  auto stored = prism::Put(prism::Buffer::View(blob.data(), blob.size()));
  Report("single client get calls (object store, 128 KiB)",
         Rate([&] { Check(prism::Get(stored).size() == blob.size(), "get stored"); }), "calls/s");
}

// A worker reads a nested 1 GiB object five times: how long each Get takes. The first also asks
// the owner where the object is; later ones only pin it in the store.
std::vector<double> TimedRemoteGets(std::vector<prism::ObjectRef<prism::Buffer>> refs) {
  std::vector<double> us;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    prism::Buffer b = prism::Get(refs[0]);
    us.push_back(Micros(Clock::now() - t0));
    if (b.size() != (uint64_t{1} << 30) || b.data()[b.size() - 1] != 9) return {};
  }
  return us;
}
PRISM_REMOTE(TimedRemoteGets);

void CrossProcessGet() {
  std::vector<uint8_t> big(uint64_t{1} << 30, 9);
  auto ref = prism::Put(prism::Buffer::View(big.data(), big.size()));
  big = {};
  std::vector<double> us = prism::Get(prism::Task(TimedRemoteGets).Remote(std::vector{ref}));
  Check(us.size() == 5, "cross-process get");
  Report("get of a 1 GiB object from another process, first", us[0], "us");
  Report("get of a 1 GiB object from another process, median of the next 4",
         Percentile({us.begin() + 1, us.end()}, 0.5), "us");
}

void WaitThousandRefs() {
  double rate = Rate(
      [] {
        std::vector<prism::ObjectRef<int>> pending;
        for (int i = 0; i < 1000; ++i) pending.push_back(prism::Task(Noop).Remote(i));
        while (!pending.empty()) pending = prism::Wait(pending, 1).unready;
      },
      2.0, 3);
  Report("single client wait 1k refs", rate, "rounds/s");
}

std::vector<prism::ObjectRef<int>> TenThousandRefs() {
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(10000);
  for (int i = 0; i < 10000; ++i) refs.push_back(prism::Put(i));
  return refs;
}
PRISM_REMOTE(TenThousandRefs);

void GetObjectContainingRefs() {
  auto outer = prism::Task(TenThousandRefs).Remote();
  Check(prism::Get(outer).size() == 10000, "10k refs");
  Report("single client get object containing 10k refs",
         Rate([&] { Check(prism::Get(outer).size() == 10000, "10k refs"); }), "calls/s");
}

// The embedded daemon is this process's child running the prism tool.
void DaemonMemory() {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos || line.find("(prism)") == std::string::npos) continue;
    int ppid = std::atoi(line.c_str() + close + 4);
    if (ppid != getpid()) continue;
    std::ifstream status(e.path() / "status");
    while (std::getline(status, line)) {
      if (line.rfind("RssAnon:", 0) == 0) {
        Report("node daemon idle private memory (RssAnon)", std::atof(line.c_str() + 8) / 1024,
               "MiB");
      }
    }
  }
}

}  // namespace

// As Ray's "placement group create/removal": create 100 one-bundle groups, wait for each, remove
// each; groups per second.
void PlacementGroupCreateRemoval(int rounds) {
  int groups = 0;
  auto start = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    std::vector<prism::PlacementGroup> pgs;
    for (int i = 0; i < 100; ++i) {
      pgs.push_back(prism::CreatePlacementGroup({.bundles = {{{"CPU", 0.001}}}}));
    }
    for (auto& pg : pgs) Check(pg.Wait(std::chrono::seconds(30)), "placement group ready");
    for (auto& pg : pgs) prism::RemovePlacementGroup(pg);
    groups += 100;
  }
  Report("placement group create/removal", groups / Seconds(Clock::now() - start), "groups/s");
}

void StreamInts(prism::StreamWriter<int>& out, int n) {
  for (int i = 0; i < n; ++i) out.Write(i);
}
PRISM_REMOTE(StreamInts);

// One streaming task writing small values, read by the driver as they come.
void StreamingValues(int n) {
  auto start = Clock::now();
  auto s = prism::Task(StreamInts).Remote(n);
  int64_t sum = 0;
  while (auto ref = s.Next()) sum += prism::Get(*ref);
  Check(sum == int64_t{n} * (n - 1) / 2, "stream sum");
  Report("single client streaming task values", n / Seconds(Clock::now() - start), "values/s");
}

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  CLI::App app{"prism microbenchmark"};
  bool json = false;
  double cpus = 0;
  int scale = 1;
  app.add_flag("--json", json, "print JSON instead of name: value lines");
  app.add_option("--num-cpus", cpus, "CPUs of the embedded cluster (default: all)");
  app.add_option("--scale", scale, "multiply the iteration counts");

  std::string only;
  app.add_option("--only", only,
                 "run only the workloads whose name holds this text (floors run always)");
  bool no_floors = false;
  app.add_flag("--no-floors", no_floors, "skip the raw floors (for profiling one workload)");
  CLI11_PARSE(app, argc, argv);

  if (!no_floors) RawSocketRoundTrip(20000 * scale);
  prism::Init({.num_cpus = cpus});
  // Warm up: start the workers and the leases.
  for (int i = 0; i < 3; ++i) SingleClientTasksAsync(2000);
  g_lines.clear();
  if (!no_floors) {
    RawSocketRoundTrip(20000 * scale);
    RawPipelinedFrames(200000 * scale);
  }
  const std::vector<std::pair<std::string, std::function<void()>>> workloads = {
      {"tasks sync", [&] { SingleClientTasksSync(5000 * scale); }},
      {"tasks async", [&] { SingleClientTasksAsync(50000 * scale); }},
      {"multi client tasks", [&] { MultiClientTasksAsync(4, 12500 * scale); }},
      {"tasks and get batch", [&] { SingleClientTasksAndGetBatch(50 * scale, 1000); }},
      {"actor calls sync", [&] { ActorCallsSync(5000 * scale); }},
      {"actor calls async", [&] { ActorCallsAsync(50000 * scale); }},
      {"placement group", [&] { PlacementGroupCreateRemoval(5 * scale); }},
      {"streaming", [&] { StreamingValues(50000 * scale); }},
      {"put gigabytes",
       [&] {
         MemcpyFloor(256 * kMiB);
         PutGigabytes(256 * kMiB);
       }},
      {"put and get calls", [&] { PutAndGetCalls(); }},
      {"cross-process get", [&] { CrossProcessGet(); }},
      {"wait", [&] { WaitThousandRefs(); }},
      {"refs", [&] { GetObjectContainingRefs(); }},
  };
  for (const auto& [name, run] : workloads) {
    if (only.empty() || name.find(only) != std::string::npos) run();
  }
  if (only.empty()) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    DaemonMemory();
  }
  prism::Shutdown();

  if (json) {
    std::printf("[");
    for (size_t i = 0; i < g_lines.size(); ++i) {
      std::printf("%s\n  {\"name\": \"%s\", \"value\": %.2f, \"unit\": \"%s\"}", i ? "," : "",
                  g_lines[i].name.c_str(), g_lines[i].value, g_lines[i].unit.c_str());
    }
    std::printf("\n]\n");
  } else {
    for (const auto& l : g_lines)
      std::printf("%s: %.2f %s\n", l.name.c_str(), l.value, l.unit.c_str());
  }
  return 0;
}

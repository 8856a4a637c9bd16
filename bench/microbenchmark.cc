// prism's microbenchmark: workloads named as in `ray microbenchmark`, printed as
// "name: value unit" lines (or JSON with --json). Every workload checks its results.
//
// The floor: the round trip of a 64-byte message over a Unix socket between two processes,
// measured in the same run.
#include <prism/prism.h>

#include <CLI/CLI.hpp>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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
  for (int i = 0; i < n; ++i) Check(values[static_cast<size_t>(i)] == i, "single client tasks async");
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
  Report("single client tasks and get batch", batches / secs, "batches/s (of " +
         std::to_string(batch) + " tasks)");
}

}  // namespace

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  CLI::App app{"prism microbenchmark"};
  bool json = false;
  double cpus = 0;
  int scale = 1;
  app.add_flag("--json", json, "print JSON instead of name: value lines");
  app.add_option("--num-cpus", cpus, "CPUs of the embedded cluster (default: all)");
  app.add_option("--scale", scale, "multiply the iteration counts");
  CLI11_PARSE(app, argc, argv);

  RawSocketRoundTrip(20000 * scale);
  prism::Init({.num_cpus = cpus});
  // Warm up: start the workers and the leases.
  for (int i = 0; i < 3; ++i) SingleClientTasksAsync(2000);
  g_lines.clear();
  RawSocketRoundTrip(20000 * scale);
  SingleClientTasksSync(5000 * scale);
  SingleClientTasksAsync(50000 * scale);
  MultiClientTasksAsync(4, 12500 * scale);
  SingleClientTasksAndGetBatch(50 * scale, 1000);
  prism::Shutdown();

  if (json) {
    std::printf("[");
    for (size_t i = 0; i < g_lines.size(); ++i) {
      std::printf("%s\n  {\"name\": \"%s\", \"value\": %.2f, \"unit\": \"%s\"}", i ? "," : "",
                  g_lines[i].name.c_str(), g_lines[i].value, g_lines[i].unit.c_str());
    }
    std::printf("\n]\n");
  } else {
    for (const auto& l : g_lines) std::printf("%s: %.2f %s\n", l.name.c_str(), l.value, l.unit.c_str());
  }
  return 0;
}

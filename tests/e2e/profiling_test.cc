// Profiling: the timeline (tasks per worker and thread, GPU tasks' device time per stream, as a
// Chrome trace) and the worker launch prefix (how Nsight wraps workers).
#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

namespace {

int Add(int a, int b) { return a + b; }
float GpuWork(int n) {
  prism::gpu::Context& ctx = prism::gpu::CurrentContext();
  auto b = ctx.Allocate(n * sizeof(float));
  if (!b.ok()) throw std::runtime_error(b.status().ToString());
  prism::gpu::DeviceArray x{b->data(), prism::gpu::DType::kFloat32, static_cast<size_t>(n),
                            ctx.device()};
  if (!prism::gpu::ops::Fill(ctx.backend(), ctx.stream(), x, 3).ok())
    throw std::runtime_error("fill");
  float first = 0;
  if (!ctx.stream().CopyAsync(&first, b->data(), sizeof first).ok() ||
      !ctx.stream().Synchronize().ok()) {
    throw std::runtime_error("copy");
  }
  return first;
}
std::string Env(std::string name) {
  const char* v = std::getenv(name.c_str());
  return v ? v : "<unset>";
}
PRISM_REMOTE(Add, GpuWork, Env);

TEST(TimelineTest, TasksAndGpuWorkBecomeAChromeTrace) {
  setenv("PRISM_GPU_BACKEND", "sim", 1);
  prism::Init({.num_cpus = 2, .gpu_topology = "nvlink-pairs-4", .timeline = true});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(prism::Get(prism::Task(Add).Remote(i, 1)), i + 1);
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(prism::Get(prism::Task(GpuWork).Options({.num_gpus = 1}).Remote(4096)), 3.0f);
  std::string path = ::testing::TempDir() + "/prism-trace-" + std::to_string(getpid()) + ".json";
  // GPU spans are written once the GPU is done with the task's work (the task's last free is
  // still in flight when it returns): look until both are there.
  nlohmann::json trace;
  for (int attempt = 0; attempt < 100; ++attempt) {
    prism::WriteTimeline(path);
    std::ifstream in(path);
    trace = nlohmann::json::parse(in);
    int spans = 0;
    for (const auto& e : trace["traceEvents"]) spans += e.value("cat", "") == "gpu";
    if (spans >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  prism::Shutdown();
  unsetenv("PRISM_GPU_BACKEND");
  ASSERT_TRUE(trace.contains("traceEvents"));
  std::map<std::string, int> tasks, gpu;
  std::map<std::pair<int64_t, int64_t>, std::string> thread_names;
  std::set<int64_t> processes;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name")
      thread_names[{e["pid"], e["tid"]}] = e["args"]["name"];
    if (e["ph"] == "M" && e["name"] == "process_name") processes.insert(e["pid"].get<int64_t>());
    if (e["ph"] != "X") continue;
    EXPECT_GE(e["dur"].get<int64_t>(), 0);
    EXPECT_GT(e["ts"].get<int64_t>(), 0);
    (e["cat"] == "gpu" ? gpu : tasks)[e["name"]]++;
    if (e["cat"] == "gpu") {
      std::string stream = thread_names[{e["pid"], e["tid"]}];
      EXPECT_EQ(stream.rfind("prism gpu0 stream", 0), 0u)
          << "GPU work is on a track per stream: " << stream;
      EXPECT_GT(e["args"]["gpu_ms"].get<double>(), 0.0) << "timed on the device by events";
    }
  }
  EXPECT_EQ(tasks["Add"], 3);
  EXPECT_EQ(tasks["GpuWork"], 2);
  EXPECT_EQ(gpu["GpuWork"], 2) << trace.dump();
  EXPECT_GE(processes.size(), 2u) << "a CPU worker and a GPU worker";
  std::remove(path.c_str());
}

TEST(TimelineTest, OffByDefault) {
  prism::Init({.num_cpus = 1});
  EXPECT_EQ(prism::Get(prism::Task(Add).Remote(1, 1)), 2);
  std::string path = ::testing::TempDir() + "/prism-empty-trace.json";
  prism::WriteTimeline(path);
  prism::Shutdown();
  std::ifstream in(path);
  nlohmann::json trace = nlohmann::json::parse(in);
  EXPECT_TRUE(trace["traceEvents"].empty());
  std::remove(path.c_str());
  EXPECT_THROW(prism::WriteTimeline(path), prism::Error) << "no runtime";
}

TEST(LaunchPrefixTest, WorkersStartThroughThePrefix) {
  prism::Init({.num_cpus = 1, .worker_launch_prefix = {"env", "PRISM_TEST_VIA_PREFIX=yes"}});
  EXPECT_EQ(prism::Get(prism::Task(Env).Remote(std::string("PRISM_TEST_VIA_PREFIX"))), "yes");
  prism::Shutdown();
}

int Pid() { return getpid(); }
int ParentPid() { return getppid(); }
PRISM_REMOTE(Pid, ParentPid);

// As `nsys profile` does, a shell that runs the worker as its child (not by exec): the daemon
// accepts the descendant and ends it at shutdown.
TEST(LaunchPrefixTest, AWorkerMayBeThePrefixsChild) {
  prism::Init({.num_cpus = 1, .worker_launch_prefix = {"sh", "-c", "\"$@\"; exit $?", "sh"}});
  int worker = prism::Get(prism::Task(Pid).Remote());
  int parent = prism::Get(prism::Task(ParentPid).Remote());
  std::ifstream comm("/proc/" + std::to_string(parent) + "/comm");
  std::string name;
  comm >> name;
  EXPECT_EQ(name, "sh") << "the worker runs under the prefix's shell";
  prism::Shutdown();
  for (int i = 0; i < 200 && ::kill(worker, 0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(::kill(worker, 0), 0) << "the worker ended with the cluster";
}

TEST(LaunchPrefixTest, APrefixThatCannotRunIsAClearError) {
  prism::Init({.num_cpus = 1, .worker_launch_prefix = {"/nonexistent/launcher"}});
  try {
    prism::Get(prism::Task(Env).Remote(std::string("HOME")), std::chrono::seconds(60));
    ADD_FAILURE() << "no worker can start";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fail to start"), std::string::npos) << e.what();
  }
  prism::Shutdown();
}

}  // namespace

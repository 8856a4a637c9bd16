// Faults: killed workers, crashing tasks, and a driver killed with SIGKILL.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

namespace fs = std::filesystem;

// A value whose encoding kills its process half way through writing it, once (marker file):
// the worker dies with its result created in the object store but not sealed.
struct DiesWhileWritten {
  std::string marker;
  std::vector<uint8_t> bytes;
};

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<DiesWhileWritten> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o,
                                        const DiesWhileWritten& v) const {
      o.pack_array(2);
      o.pack(v.marker);
      // The writing pass (not the measuring one) of the first attempt dies half way.
      if (prism::internal::tl_encode_cursor.at != nullptr && !fs::exists(v.marker)) {
        std::ofstream(v.marker) << "died";
        std::raise(SIGKILL);
      }
      o.pack(v.bytes);
      return o;
    }
  };
  template <>
  struct convert<DiesWhileWritten> {
    const msgpack::object& operator()(const msgpack::object& o, DiesWhileWritten& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      v.marker = o.via.array.ptr[0].as<std::string>();
      v.bytes = o.via.array.ptr[1].as<std::vector<uint8_t>>();
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

namespace {

int ReportAndSleep(std::string dir) {
  std::ofstream(dir + "/pid-" + std::to_string(getpid())) << getpid();
  std::this_thread::sleep_for(std::chrono::hours(1));
  return 0;
}
PRISM_REMOTE(ReportAndSleep);

int CrashOnce(std::string marker) {
  if (fs::exists(marker)) return 42;
  std::ofstream(marker) << "crashed";
  raise(SIGKILL);
  return 0;
}
PRISM_REMOTE(CrashOnce);

int Square(int x) { return x * x; }
PRISM_REMOTE(Square);

DiesWhileWritten BigResultDyingOnce(std::string marker) {
  return DiesWhileWritten{marker, std::vector<uint8_t>(8 << 20, 3)};
}
PRISM_REMOTE(BigResultDyingOnce);

int Forever() {
  std::this_thread::sleep_for(std::chrono::hours(1));
  return 0;
}
PRISM_REMOTE(Forever);

// Leaves a child running under a lease this worker holds, and returns at once.
int SpawnAndForget() {
  prism::Task(Forever).Options({.num_cpus = 0}).Remote();
  return 1;
}
PRISM_REMOTE(SpawnAndForget);

// Makes objects in the worker and hands back refs to them: the driver borrows them.
std::vector<prism::ObjectRef<prism::Buffer>> PutBigThenReport(std::string dir) {
  std::vector<uint8_t> bytes(4 << 20, 5);
  auto ref = prism::Put(prism::Buffer::View(bytes.data(), bytes.size()));
  std::ofstream(dir + "/pid-" + std::to_string(getpid())) << getpid();
  return {ref};
}
PRISM_REMOTE(PutBigThenReport);

std::string TempDir() {
  std::string t = (fs::temp_directory_path() / "prism-fault-XXXXXX").string();
  return mkdtemp(t.data());
}

// A process is gone once it no longer exists or is a zombie nobody reaped yet.
bool Gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(std::stoi(name));
  }
  return out;
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> out;
  std::string part;
  while (std::getline(in, part, '\0')) out.push_back(part);
  return out;
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prism::Init({.num_cpus = 2});
    dir_ = TempDir();
  }
  void TearDown() override {
    prism::Shutdown();
    fs::remove_all(dir_);
  }
  // Waits for a pid file not seen before; returns its pid.
  pid_t NextWorkerPid(std::set<pid_t>& seen) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      for (const auto& e : fs::directory_iterator(dir_)) {
        pid_t pid = std::stoi(e.path().filename().string().substr(4));
        if (seen.insert(pid).second) return pid;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }
  std::string dir_;
};

TEST_F(FaultTest, KilledWorkerIsRetriedThenReportedAsCrashed) {
  auto ref = prism::Task(ReportAndSleep).Options({.num_cpus = 1, .max_retries = 2}).Remote(dir_);
  std::set<pid_t> seen;
  for (int attempt = 0; attempt < 3; ++attempt) {
    pid_t pid = NextWorkerPid(seen);
    ASSERT_GT(pid, 0) << "attempt " << attempt << " never started";
    ASSERT_NE(pid, getpid());
    ASSERT_EQ(kill(pid, SIGKILL), 0);
  }
  try {
    prism::Get(ref, std::chrono::seconds(30));
    FAIL() << "expected WorkerCrashedError";
  } catch (const prism::WorkerCrashedError& e) {
    EXPECT_NE(std::string(e.what()).find("3 attempt"), std::string::npos) << e.what();
  }
  EXPECT_EQ(prism::GetRuntimeStats().tasks_retried, 2u);
  // The daemon keeps serving.
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(9), std::chrono::seconds(30)), 81);
}

TEST_F(FaultTest, CrashingTaskSucceedsOnRetry) {
  auto ref = prism::Task(CrashOnce).Options({.max_retries = 1}).Remote(dir_ + "/marker");
  EXPECT_EQ(prism::Get(ref, std::chrono::seconds(30)), 42);
}

TEST_F(FaultTest, CrashingTaskWithoutRetriesFails) {
  auto ref = prism::Task(CrashOnce).Options({.max_retries = 0}).Remote(dir_ + "/marker");
  EXPECT_THROW(prism::Get(ref, std::chrono::seconds(30)), prism::WorkerCrashedError);
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(3), std::chrono::seconds(30)), 9);
}

// The worker dies with its large result created but not sealed in the store: the retry writes it
// again (the half-written object goes with the dead worker's store connection).
TEST_F(FaultTest, WorkerDyingWhileWritingAResultIsRetried) {
  auto ref = prism::Task(BigResultDyingOnce).Options({.max_retries = 1}).Remote(dir_ + "/marker");
  DiesWhileWritten v = prism::Get(ref, std::chrono::seconds(60));
  EXPECT_TRUE(fs::exists(dir_ + "/marker")) << "the first attempt died";
  EXPECT_EQ(v.bytes.size(), 8u << 20);
  EXPECT_EQ(v.bytes.back(), 3);
  ref = {};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (prism::GetObjectStoreStats().num_objects > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(prism::GetObjectStoreStats().num_objects, 0u) << "nothing half written is left";
}

// Objects owned by a worker that dies fail with OwnerDiedError in their borrowers, and leave the
// store.
TEST_F(FaultTest, DeadOwnersObjectsFailAndLeaveTheStore) {
  auto refs = prism::Get(prism::Task(PutBigThenReport).Remote(dir_), std::chrono::seconds(30));
  std::set<pid_t> seen;
  pid_t pid = NextWorkerPid(seen);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(prism::GetObjectStoreStats().num_objects, 1u);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_THROW(prism::Get(refs[0], std::chrono::seconds(30)), prism::OwnerDiedError);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (prism::GetObjectStoreStats().num_objects > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(prism::GetObjectStoreStats().num_objects, 0u);
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(4), std::chrono::seconds(30)), 16);
}

int SleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
PRISM_REMOTE(SleepMs);

class Sleeper {
 public:
  int Nap(int ms) { return SleepMs(ms); }
};
Sleeper* MakeSleeper() { return new Sleeper(); }
PRISM_REMOTE(MakeSleeper, &Sleeper::Nap);

// Cancel with force kills the worker running the task; Get raises TaskCancelledError.
TEST_F(FaultTest, CancelWithForceKillsARunningTask) {
  auto ref = prism::Task(ReportAndSleep).Options({.max_retries = 3}).Remote(dir_);
  std::set<pid_t> seen;
  pid_t pid = NextWorkerPid(seen);
  ASSERT_GT(pid, 0);
  prism::Cancel(ref, /*force=*/true);
  EXPECT_THROW(prism::Get(ref, std::chrono::seconds(30)), prism::TaskCancelledError);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!Gone(pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(Gone(pid)) << "the worker running it was killed";
  EXPECT_EQ(prism::GetRuntimeStats().tasks_retried, 0u) << "a cancelled task is not retried";
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(5), std::chrono::seconds(30)), 25);
}

// Without force, a queued task never runs and a running one's result is dropped.
TEST_F(FaultTest, CancelQueuedAndRunningTasks) {
  // Both CPUs busy: the third task waits.
  auto a = prism::Task(SleepMs).Remote(400);
  auto b = prism::Task(SleepMs).Remote(400);
  auto queued = prism::Task(SleepMs).Remote(1);
  prism::Cancel(queued);
  prism::Cancel(a);
  EXPECT_THROW(prism::Get(queued, std::chrono::seconds(30)), prism::TaskCancelledError);
  EXPECT_THROW(prism::Get(a, std::chrono::seconds(30)), prism::TaskCancelledError);
  EXPECT_EQ(prism::Get(b, std::chrono::seconds(30)), 400) << "others are untouched";
  prism::Cancel(b);  // finished already: keeps its result
  EXPECT_EQ(prism::Get(b), 400);
  EXPECT_THROW(prism::Cancel(prism::Put(1)), prism::InvalidArgumentError);
}

TEST_F(FaultTest, CancelActorCalls) {
  auto s = prism::Actor(MakeSleeper).Remote();
  auto running = s.Task(&Sleeper::Nap).Remote(300);
  auto waiting = s.Task(&Sleeper::Nap).Remote(1);
  prism::Cancel(waiting);
  EXPECT_THROW(prism::Get(waiting, std::chrono::seconds(30)), prism::TaskCancelledError);
  EXPECT_EQ(prism::Get(running, std::chrono::seconds(30)), 300);
  EXPECT_EQ(prism::Get(s.Task(&Sleeper::Nap).Remote(2)), 2) << "the actor goes on";
}

TEST(DriverDeathTest, JobEndWithNestedLeasesStopsOnlyItsOwnWorkers) {
  // A bystander process of ours, which nothing in prism may touch.
  pid_t bystander = fork();
  ASSERT_GE(bystander, 0);
  if (bystander == 0) {
    pause();
    _exit(0);
  }
  for (int round = 0; round < 5; ++round) {
    prism::Init({.num_cpus = 2});
    std::vector<prism::ObjectRef<int>> refs;
    for (int i = 0; i < 3; ++i)
      refs.push_back(prism::Task(SpawnAndForget).Options({.num_cpus = 0}).Remote());
    for (int v : prism::Get(refs)) EXPECT_EQ(v, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the leases go idle
    prism::Shutdown();
    ASSERT_FALSE(Gone(bystander)) << "round " << round
                                  << ": the daemon killed a process not its own";
  }
  kill(bystander, SIGKILL);
  int status;
  waitpid(bystander, &status, 0);
}

TEST(DriverDeathTest, SigkilledDriverLeavesNothingBehind) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t driver = fork();
  ASSERT_GE(driver, 0);
  if (driver == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    execl(PRISM_SIGKILL_DRIVER, PRISM_SIGKILL_DRIVER, static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  FILE* f = fdopen(out[0], "r");
  int worker = -1;
  ASSERT_EQ(fscanf(f, "ready %d", &worker), 1);
  fclose(f);
  std::vector<pid_t> daemons = ChildrenOf(driver);
  ASSERT_EQ(daemons.size(), 1u);
  pid_t daemon = daemons[0];
  std::vector<pid_t> workers = ChildrenOf(daemon);
  ASSERT_FALSE(workers.empty());
  std::string session;
  auto argv = Cmdline(daemon);
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == "--session-dir") session = argv[i + 1];
  }
  ASSERT_FALSE(session.empty());
  ASSERT_TRUE(fs::exists(session + "/daemon.sock"));

  ASSERT_EQ(kill(driver, SIGKILL), 0);
  int status;
  waitpid(driver, &status, 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto all_gone = [&] {
    if (!Gone(daemon) || fs::exists(session)) return false;
    for (pid_t w : workers) {
      if (!Gone(w)) return false;
    }
    return true;
  };
  while (!all_gone() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(Gone(daemon)) << "daemon " << daemon << " outlived its driver";
  for (pid_t w : workers) EXPECT_TRUE(Gone(w)) << "worker " << w << " outlived its driver";
  EXPECT_FALSE(fs::exists(session)) << session << " was left behind";
}

}  // namespace

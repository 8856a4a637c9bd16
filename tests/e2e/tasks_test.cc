// Remote tasks end to end: a real daemon (started by Init) and real worker processes.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "base/spin.h"
#include "e2e/rendezvous.h"
#include "node/session.h"
#include "worker/core_worker.h"

namespace {

int Square(int x) { return x * x; }
PRISM_REMOTE(Square);

int Pid() { return static_cast<int>(getpid()); }
PRISM_REMOTE(Pid);

std::string Concat(std::string a, int b, std::vector<double> c) {
  return a + ":" + std::to_string(b) + ":" + std::to_string(c.size());
}
PRISM_REMOTE(Concat);

int Throws(int x) {
  if (x > 0) throw std::out_of_range("index " + std::to_string(x) + " is past the end");
  return 0;
}
PRISM_REMOTE(Throws);

int Forever() {
  std::this_thread::sleep_for(std::chrono::hours(1));
  return 0;
}
PRISM_REMOTE(Forever);

int Add(int a, int b) { return a + b; }
PRISM_REMOTE(Add);

void Nothing() {}
PRISM_REMOTE(Nothing);

int NotRegistered(int x) { return x; }

// A task that submits tasks itself and waits on them (the worker is an owner too).
int SumOfSquares(int n) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < n; ++i) refs.push_back(prism::Task(Square).Remote(i));
  int sum = 0;
  for (int v : prism::Get(refs)) sum += v;
  return sum;
}
PRISM_REMOTE(SumOfSquares);

// Refs nested in a container travel as refs; the callee gets them from their owner.
int SumRefs(std::vector<prism::ObjectRef<int>> refs) {
  int sum = 0;
  for (int v : prism::Get(refs)) sum += v;
  return sum;
}
PRISM_REMOTE(SumRefs);

int SlowPid(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return static_cast<int>(getpid());
}
PRISM_REMOTE(SlowPid);

int Rendezvous(std::string dir, int n) { return prism::testing::MeetIn(dir, n); }
PRISM_REMOTE(Rendezvous);

// Gets a ref it borrowed after its owner dropped its own handle.
int GetBorrowedLater(std::vector<prism::ObjectRef<int>> refs) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  try {
    return prism::Get(refs[0], std::chrono::seconds(20));
  } catch (const prism::ObjectLostError&) {
    return -1;
  }
}
PRISM_REMOTE(GetBorrowedLater);

std::string Echo(std::string s) { return s; }
PRISM_REMOTE(Echo);

std::string ReadEnv(std::string name) {
  const char* v = std::getenv(name.c_str());
  return v == nullptr ? "<unset>" : v;
}
PRISM_REMOTE(ReadEnv);

// Submits `n` nested tasks (a CPU each) and waits for all of them, holding a CPU itself.
int SumOfNestedSquares(int n) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < n; ++i) refs.push_back(prism::Task(Square).Remote(i));
  int sum = 0;
  for (int v : prism::Get(refs)) sum += v;
  return sum;
}
PRISM_REMOTE(SumOfNestedSquares);

// A binary tree of tasks: each inner node blocks in Get on its two children; returns the leaves.
int TreeLeaves(int depth) {
  if (depth == 0) return 1;
  auto left = prism::Task(TreeLeaves).Remote(depth - 1);
  auto right = prism::Task(TreeLeaves).Remote(depth - 1);
  return prism::Get(left) + prism::Get(right);
}
PRISM_REMOTE(TreeLeaves);

class Doubler {
 public:
  int Twice(int x) { return 2 * x; }
  int Fails(int x) {
    if (x > 0) throw std::invalid_argument("no");
    return 0;
  }
};
Doubler* MakeDoubler() { return new Doubler(); }
PRISM_REMOTE(MakeDoubler, &Doubler::Twice, &Doubler::Fails);

class TasksTest : public ::testing::Test {
 protected:
  void SetUp() override { prism::Init({.num_cpus = 2}); }
  void TearDown() override { prism::Shutdown(); }
};

TEST_F(TasksTest, SeedExample) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 8; ++i) refs.push_back(prism::Task(Square).Remote(i));
  EXPECT_EQ(prism::Get(refs), (std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49}));
}

TEST_F(TasksTest, TasksRunInOtherProcesses) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 20; ++i) refs.push_back(prism::Task(Pid).Remote());
  for (int pid : prism::Get(refs)) {
    EXPECT_NE(pid, getpid());
    EXPECT_GT(pid, 0);
  }
}

TEST_F(TasksTest, ThousandTasksUseNoMoreLeasesThanWorkers) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 1000; ++i) refs.push_back(prism::Task(Square).Remote(i));
  auto values = prism::Get(refs);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(values[i], i * i);
  prism::RuntimeStats s = prism::GetRuntimeStats();
  EXPECT_EQ(s.tasks_submitted, 1000u);
  EXPECT_GE(s.leases_granted, 1u);
  EXPECT_LE(s.leases_granted, 2u) << "2 CPUs, 1-CPU tasks: at most 2 workers at a time";
}

TEST_F(TasksTest, TasksSpreadOverWorkersWhileCpusAreFree) {
  // Two tasks on a 2-CPU node run at once on two workers, not queued behind each other on one.
  std::string dir = (std::filesystem::temp_directory_path() / "prism-spread-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  auto a = prism::Task(Rendezvous).Remote(dir, 2);
  auto b = prism::Task(Rendezvous).Remote(dir, 2);
  EXPECT_NE(prism::Get(a), prism::Get(b));
  std::filesystem::remove_all(dir);
}

// The task that borrows a nested ref keeps a pending object alive after the driver dropped
// its own handle: the value still arrives.
TEST_F(TasksTest, NestedRefToAPendingObjectOutlivesTheDriversHandle) {
  auto pending = prism::Task(SlowPid).Options({.num_cpus = 0}).Remote(400);
  auto borrower = prism::Task(GetBorrowedLater)
                      .Options({.num_cpus = 0})
                      .Remote(std::vector<prism::ObjectRef<int>>{pending});
  pending = prism::ObjectRef<int>();  // the driver drops its only handle
  EXPECT_GT(prism::Get(borrower, std::chrono::seconds(30)), 0);
}

TEST_F(TasksTest, MemoryIsAResource) {
  EXPECT_EQ(prism::Get(prism::Task(Square).Options({.memory = 64u << 20}).Remote(4)), 16);
  // More than the node has (its memory less the object store): never runs on this fixed cluster.
  EXPECT_THROW(prism::Get(prism::Task(Square).Options({.memory = uint64_t{1} << 40}).Remote(4)),
               prism::InfeasibleError);
  EXPECT_THROW(prism::Task(Square).Options({.resources = {{"memory", 1}}}).Remote(1),
               prism::InvalidArgumentError);
}

TEST_F(TasksTest, EnvironmentVariablesPerTask) {
  auto teal = prism::Task(ReadEnv)
                  .Options({.env = {{"TEST_COLOR", "teal"}}})
                  .Remote(std::string("TEST_COLOR"));
  auto plum = prism::Task(ReadEnv)
                  .Options({.env = {{"TEST_COLOR", "plum"}}})
                  .Remote(std::string("TEST_COLOR"));
  EXPECT_EQ(prism::Get(teal), "teal");
  EXPECT_EQ(prism::Get(plum), "plum");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(prism::Get(prism::Task(ReadEnv).Remote(std::string("TEST_COLOR"))), "<unset>")
        << "workers started for other variables do not run plain tasks";
  }
  EXPECT_THROW(prism::Task(ReadEnv).Options({.env = {{"BAD=NAME", "x"}}}).Remote(std::string("X")),
               prism::InvalidArgumentError);
  EXPECT_THROW(
      prism::Task(ReadEnv).Options({.env = {{"PRISM_WORKER_ID", "x"}}}).Remote(std::string("X")),
      prism::InvalidArgumentError);
}

// On a node with 2 CPUs, tasks that hold both CPUs and wait on 10 nested tasks each finish: a
// task blocked in Get gives its CPU back while it waits.
TEST_F(TasksTest, BlockedTasksLendTheirCpusToNestedTasks) {
  auto one = prism::Task(SumOfNestedSquares).Remote(10);
  EXPECT_EQ(prism::Get(one, std::chrono::seconds(60)), 285);
  auto a = prism::Task(SumOfNestedSquares).Remote(10);
  auto b = prism::Task(SumOfNestedSquares).Remote(10);
  EXPECT_EQ(prism::Get(a, std::chrono::seconds(60)), 285);
  EXPECT_EQ(prism::Get(b, std::chrono::seconds(60)), 285);
}

// A tree of depth 7 on 2 CPUs: 127 tasks wait in Get on their children at once, far more than
// the worker pool's cap (4 x CPUs + 4). Workers blocked in Get do not count against it, so the
// leaves still get workers.
TEST_F(TasksTest, ADeepTreeOfNestedGetsFinishesOnTwoCpus) {
  auto leaves = prism::Task(TreeLeaves).Remote(7);
  EXPECT_EQ(prism::Get(leaves, std::chrono::seconds(240)), 128);
}

// Values beyond what a message may hold travel through the object store.
TEST_F(TasksTest, ValuesLargerThanAMessageGoThroughTheStore) {
  std::string big(300u << 20, 'x');
  big[12345] = 'y';
  auto ref = prism::Task(Echo).Remote(prism::Put(big));
  EXPECT_TRUE(prism::Get(ref) == big);
  EXPECT_EQ(prism::Get(prism::Task(Echo).Remote(std::string("small"))), "small");
}

TEST_F(TasksTest, ManyArgumentTypes) {
  auto ref = prism::Task(Concat).Remote("x", 3, std::vector<double>{1, 2});
  EXPECT_EQ(prism::Get(ref), "x:3:2");
  prism::ObjectRef<void> v = prism::Task(Nothing).Remote();
  prism::Get(v);
}

TEST_F(TasksTest, RefArgumentsAreResolved) {
  auto a = prism::Task(Square).Remote(3);
  auto b = prism::Put(4);
  auto c = prism::Task(Add).Remote(a, b);
  auto d = prism::Task(Add).Remote(c, 100);
  EXPECT_EQ(prism::Get(d), 9 + 4 + 100);
}

TEST_F(TasksTest, PutAndGet) {
  auto r = prism::Put(std::string("hello"));
  EXPECT_EQ(prism::Get(r), "hello");
  auto v = prism::Put(std::vector<int>{1, 2, 3});
  EXPECT_EQ(prism::Get(v), (std::vector<int>{1, 2, 3}));
}

TEST_F(TasksTest, NestedTasksFromAWorker) {
  EXPECT_EQ(prism::Get(prism::Task(SumOfSquares).Options({.num_cpus = 0}).Remote(5)),
            0 + 1 + 4 + 9 + 16);
}

TEST_F(TasksTest, RefsInsideContainersAreBorrowed) {
  std::vector<prism::ObjectRef<int>> refs = {prism::Put(1), prism::Put(2),
                                             prism::Task(Square).Remote(3)};
  EXPECT_EQ(prism::Get(prism::Task(SumRefs).Remote(refs)), 12);
}

TEST_F(TasksTest, RemoteExceptionSurfacesAsTaskError) {
  auto ref = prism::Task(Throws).Remote(5);
  try {
    prism::Get(ref);
    FAIL() << "expected TaskError";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.remote_type(), "std::out_of_range");
    EXPECT_EQ(e.remote_message(), "index 5 is past the end");
    EXPECT_EQ(e.function(), "Throws");
    EXPECT_NE(std::string(e.what()).find("std::out_of_range"), std::string::npos);
  }
  // A task's name, when given, is what errors call it.
  try {
    prism::Get(prism::Task(Throws).Options({.name = "lookup-shard-7"}).Remote(2));
    FAIL() << "expected TaskError";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function(), "lookup-shard-7");
  }
  // A failed argument fails the task that depends on it with the same error.
  auto downstream = prism::Task(Add).Remote(ref, 1);
  EXPECT_THROW(prism::Get(downstream), prism::TaskError);
  EXPECT_EQ(prism::Get(prism::Task(Throws).Remote(0)), 0) << "the worker keeps serving";
}

TEST_F(TasksTest, UnregisteredFunctionFailsAtSubmission) {
  EXPECT_THROW(prism::Task(NotRegistered).Remote(1), prism::InvalidArgumentError);
  auto by_name = prism::Task(prism::CppFunction<int>("NoSuchFunction")).Remote(1);
  try {
    prism::Get(by_name);
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("NoSuchFunction"), std::string::npos);
  }
}

TEST_F(TasksTest, MismatchedArgumentTypesFailClearly) {
  auto bad = prism::Task(prism::CppFunction<int>("Square")).Remote(std::string("seven"));
  try {
    prism::Get(bad);
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("argument 0 of Square"), std::string::npos) << what;
    EXPECT_NE(what.find("int"), std::string::npos) << what;
  }
  auto arity = prism::Task(prism::CppFunction<int>("Square")).Remote(1, 2);
  EXPECT_THROW(prism::Get(arity), prism::InvalidArgumentError);
  // Reading a value as the wrong type.
  auto s = prism::Task(prism::CppFunction<std::string>("Square")).Remote(3);
  EXPECT_THROW(prism::Get(s), prism::InvalidArgumentError);
  EXPECT_EQ(prism::Get(prism::Task(prism::CppFunction<int>("Square")).Remote(7)), 49);
}

TEST_F(TasksTest, InfeasibleTaskFailsAtGet) {
  auto ref = prism::Task(Square).Options({.num_cpus = 64}).Remote(2);
  EXPECT_THROW(prism::Get(ref), prism::InfeasibleError);
  auto custom = prism::Task(Square).Options({.resources = {{"tpu", 1}}}).Remote(2);
  try {
    prism::Get(custom);
    FAIL() << "expected InfeasibleError";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(2)), 4);
}

TEST_F(TasksTest, BadOptionsFailAtSubmission) {
  EXPECT_THROW(prism::Task(Square).Options({.num_cpus = -1}).Remote(1),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(Square).Options({.resources = {{"CPU", 1}}}).Remote(1),
               prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(Square).Options({.max_retries = -2}).Remote(1),
               prism::InvalidArgumentError);
}

TEST_F(TasksTest, GetTimesOut) {
  auto ref = prism::Task(Forever).Options({.num_cpus = 0}).Remote();
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(prism::Get(ref, std::chrono::milliseconds(200)), prism::GetTimeoutError);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(200));
  EXPECT_LT(took, std::chrono::seconds(5));
}

// A thread waiting for its task's or actor call's plain reply reads it from the connection
// itself (see TaskSubmitter::ReadOwnReply): the value comes while the driver's event loop is kept
// busy. An error, which the loop may have to retry, still waits for the loop.
TEST_F(TasksTest, AWaitingThreadReadsItsCallsReplyWhileTheLoopIsBusy) {
  using namespace std::chrono_literals;
  if (prism::SpinBudget().count() == 0)
    GTEST_SKIP() << "one CPU: nothing spins, and the loop reads every reply";
  auto worker = prism::CurrentCoreWorker();
  // Holds the driver's loop until the returned promise is kept.
  auto hold_loop = [&] {
    auto release = std::make_shared<std::promise<void>>();
    auto held = std::make_shared<std::promise<void>>();
    auto held_now = held->get_future();
    worker->PostToLoop([held, released = release->get_future().share()] {
      held->set_value();
      released.wait();
    });
    held_now.wait();
    return release;
  };
  // `call(i)` returns a ref to 2i, after a warm-up call; `failing` a ref to an error. The reply
  // is read within the waiting thread's spin (a few hundred microseconds): a machine busy enough
  // to delay one past it fails that try, which then waits for the loop.
  auto check = [&](const std::string& what, auto call, auto failing) {
    SCOPED_TRACE(what);
    int read_here = 0;
    for (int i = 0; i < 40 && read_here < 3; ++i) {
      ASSERT_EQ(prism::Get(call(i)), 2 * i);  // a lease, or the actor's lane, idle
      auto release = hold_loop();
      auto ref = call(i + 1);
      try {
        EXPECT_EQ(prism::Get(ref, 300ms), 2 * (i + 1));
        ++read_here;
      } catch (const prism::GetTimeoutError&) {
      }
      release->set_value();
      EXPECT_EQ(prism::Get(ref), 2 * (i + 1));
    }
    EXPECT_GE(read_here, 3) << "no reply was read by its waiting thread while the loop was busy";
    ASSERT_EQ(prism::Get(call(2)), 4);
    auto release = hold_loop();
    auto failed = failing();
    EXPECT_THROW(prism::Get(failed, 300ms), prism::GetTimeoutError);
    release->set_value();
    EXPECT_THROW(prism::Get(failed), prism::TaskError);
    EXPECT_EQ(prism::Get(call(3)), 6);
  };
  check(
      "tasks", [](int i) { return prism::Task(Add).Remote(i, i); },
      [] { return prism::Task(Throws).Remote(1); });
  // Replies read that way are still booked by the loop, which then gives idle leases back (the
  // loop is not woken per such reply, but within a short while of one).
  for (int i = 0; i < 200; ++i) ASSERT_EQ(prism::Get(prism::Task(Add).Remote(i, i)), 2 * i);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (worker->stats().leases_returned < worker->stats().leases_granted &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(worker->stats().leases_returned, worker->stats().leases_granted)
      << "a lease was kept after its last task";
  {
    auto doubler = prism::Actor(MakeDoubler).Options({.name = "doubler"}).Remote();
    check(
        "actor calls", [&](int i) { return doubler.Task(&Doubler::Twice).Remote(i); },
        [&] { return doubler.Task(&Doubler::Fails).Remote(1); });
    for (int i = 0; i < 50; ++i)
      ASSERT_EQ(prism::Get(doubler.Task(&Doubler::Twice).Remote(i)), 2 * i);
  }
  // The handle is gone, and so are the calls that held the actor (booked shortly after their
  // replies were read): the actor ends.
  deadline = std::chrono::steady_clock::now() + 10s;
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    try {
      prism::GetActor<Doubler>("doubler");
      std::this_thread::sleep_for(10ms);
    } catch (const prism::Error&) {
      ended = true;
    }
  }
  EXPECT_TRUE(ended) << "an actor whose handle went lived on";
}

TEST_F(TasksTest, WaitReturnsReadyFirstAndHonoursTimeout) {
  auto slow = prism::Task(Forever).Options({.num_cpus = 0}).Remote();
  std::vector<prism::ObjectRef<int>> refs = {slow, prism::Task(Square).Remote(2),
                                             prism::Task(Square).Remote(3)};
  auto r = prism::Wait(refs, 2, std::chrono::seconds(30));
  ASSERT_EQ(r.ready.size(), 2u);
  EXPECT_EQ(r.unready.size(), 1u);
  EXPECT_EQ(r.unready[0], slow);
  auto t = prism::Wait(refs, 3, std::chrono::milliseconds(100));
  EXPECT_EQ(t.ready.size(), 2u) << "timeout: returns what is ready";
  EXPECT_THROW(prism::Wait(refs, 4), prism::InvalidArgumentError);
}

TEST_F(TasksTest, ConcurrentSubmittersFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<int> sums(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &sums] {
      std::vector<prism::ObjectRef<int>> refs;
      for (int i = 0; i < 100; ++i) refs.push_back(prism::Task(Add).Remote(t, i));
      for (int v : prism::Get(refs)) sums[t] += v;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(sums[t], 100 * t + 4950);
}

TEST(LifecycleTest, FailedInitFailsFastAndLeavesNothing) {
  // A session folder with a token but no daemon.
  std::string dir = (std::filesystem::temp_directory_path() / "prism-nodaemon-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  std::ofstream(dir + "/token") << "0123\n";
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(prism::Init({.address = dir}), prism::RuntimeError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_FALSE(prism::IsInitialized());
  std::filesystem::remove_all(dir);

  // A temp folder so long that the driver's socket path would not fit: a clear error, and the
  // daemon that was started for it is stopped again.
  std::string base = (std::filesystem::temp_directory_path() / "prism-long-XXXXXX").string();
  ASSERT_NE(mkdtemp(base.data()), nullptr);
  std::string tail = "/prism-" + std::to_string(getuid()) + "/s-" + std::to_string(getpid()) +
                     "-01234567/d-0123456789abcdef.sock";
  std::string longdir = base + "/" + std::string(108 - tail.size() - base.size() - 1, 'x');
  std::filesystem::create_directories(longdir);
  ASSERT_EQ((longdir + tail).size(), 108u);
  setenv("PRISM_TMPDIR", longdir.c_str(), 1);
  try {
    prism::Init();
    ADD_FAILURE() << "Init should fail";
    prism::Shutdown();
  } catch (const prism::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("too long"), std::string::npos) << e.what();
  }
  unsetenv("PRISM_TMPDIR");
  EXPECT_FALSE(prism::IsInitialized());
  bool left = false;
  for (const auto& e : std::filesystem::recursive_directory_iterator(longdir)) {
    left = left || e.path().filename().string().rfind("s-", 0) == 0;
  }
  EXPECT_FALSE(left) << "a session folder was left in " << longdir;
  std::filesystem::remove_all(base);
  prism::Init({.num_cpus = 1});  // and prism still starts normally
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(3)), 9);
  prism::Shutdown();
}

TEST(LifecycleTest, ApiBeforeInitAndAfterShutdownFailsClearly) {
  EXPECT_FALSE(prism::IsInitialized());
  EXPECT_THROW(prism::Task(Square).Remote(1), prism::InvalidArgumentError);
  EXPECT_THROW(prism::Put(1), prism::InvalidArgumentError);
  prism::Init({.num_cpus = 1});
  EXPECT_THROW(prism::Init(), prism::InvalidArgumentError);
  auto ref = prism::Task(Square).Remote(6);
  EXPECT_EQ(prism::Get(ref), 36);
  prism::Shutdown();
  prism::Shutdown();  // twice is fine
  EXPECT_THROW(prism::Get(ref), prism::InvalidArgumentError);
  prism::Init({.num_cpus = 1});  // and again
  EXPECT_EQ(prism::Get(prism::Task(Square).Remote(5)), 25);
  // A ref from the first session is refused, not waited on forever.
  EXPECT_THROW(prism::Get(ref), prism::InvalidArgumentError);
  EXPECT_THROW(prism::Task(Add).Remote(ref, 1), prism::InvalidArgumentError);
  prism::Shutdown();
  // Shutdown left no process (the daemon reaped its workers; we reaped the daemon)...
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 4 > line.size()) continue;
    int ppid = std::atoi(line.c_str() + close + 4);
    EXPECT_NE(ppid, getpid()) << "process " << e.path().filename() << " outlived Shutdown()";
  }
  // ...and no session folder (sockets) of this driver.
  std::string prefix = "s-" + std::to_string(getpid()) + "-";
  if (std::filesystem::exists(prism::SessionRoot())) {
    for (const auto& e : std::filesystem::directory_iterator(prism::SessionRoot())) {
      EXPECT_NE(e.path().filename().string().rfind(prefix, 0), 0u) << e.path() << " left behind";
    }
  }
}

}  // namespace

namespace {

// Functions this test binary does not link: the generic C++ worker loads them from a library.
TEST(CrossLanguageTest, GenericCppWorkerRunsFunctionsFromTheCodeSearchPath) {
  prism::Init({.num_cpus = 2, .code_search_path = {PRISM_TEST_CODE_DIR}});
  prism::TaskOptions cpp{.runtime = "cpp"};
  EXPECT_EQ(prism::Get(prism::Task(prism::CppFunction<int>("CrossSquare")).Options(cpp).Remote(7)),
            49);
  EXPECT_EQ(prism::Get(prism::Task(prism::CppFunction<std::string>("CrossGreet"))
                           .Options(cpp)
                           .Remote(std::string("prism"))),
            "hello prism");
  auto stats =
      prism::Get(prism::Task(prism::CppFunction<std::map<std::string, double>>("CrossStats"))
                     .Options(cpp)
                     .Remote(std::vector<double>{1.5, 2.5}));
  EXPECT_EQ(stats["count"], 2);
  EXPECT_EQ(stats["sum"], 4);
  // An unknown name is a clear error, and the runtime must be one prism knows.
  EXPECT_THROW(
      prism::Get(prism::Task(prism::CppFunction<int>("NoSuchFunction")).Options(cpp).Remote(1)),
      prism::InvalidArgumentError);
  EXPECT_THROW(
      prism::Task(prism::CppFunction<int>("CrossSquare")).Options({.runtime = "java"}).Remote(1),
      prism::InvalidArgumentError);
  prism::Shutdown();
}

}  // namespace

namespace {

// Python functions by name from C++: they run in Python workers of the driver's interpreter.
TEST(CrossLanguageTest, CppDriverCallsPythonFunctionsByName) {
#ifndef PRISM_PYTHON_DIR
  GTEST_SKIP() << "no Python package in this build (sanitizer builds leave it untested)";
#else
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
  if (::access(PRISM_PYTHON_DIR "/prism/__init__.py", R_OK) != 0)
    GTEST_SKIP() << "the Python package is not built";
  prism::Init({.num_cpus = 2, .python_executable = "/usr/bin/python3"});
  prism::TaskOptions py{.env = {{"PYTHONPATH", PRISM_PYTHON_DIR}}};
  EXPECT_EQ(
      prism::Get(prism::Task(prism::PyFunction<int64_t>("math.factorial")).Options(py).Remote(10)),
      3628800);
  EXPECT_EQ(prism::Get(prism::Task(prism::PyFunction<std::string>("os.path.join"))
                           .Options(py)
                           .Remote(std::string("a"), std::string("b"))),
            "a/b");
  EXPECT_EQ(prism::Get(prism::Task(prism::PyFunction<std::vector<int>>("builtins.sorted"))
                           .Options(py)
                           .Remote(std::vector<int>{3, 1, 2})),
            (std::vector<int>{1, 2, 3}));
  try {
    prism::Get(prism::Task(prism::PyFunction<int>("math.factorial")).Options(py).Remote(-1));
    FAIL() << "expected TaskError";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.remote_type(), "ValueError") << e.what();
  }
  EXPECT_THROW(
      prism::Get(prism::Task(prism::PyFunction<int>("no_such_module.f")).Options(py).Remote(1)),
      prism::TaskError);
  prism::Shutdown();
#endif
}

}  // namespace

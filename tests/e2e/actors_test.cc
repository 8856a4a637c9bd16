// Actors: creation, ordered calls, handles passed around, names, kills, restarts and errors.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "e2e/rendezvous.h"

namespace {

class Counter {
 public:
  explicit Counter(int start) : value_(start) {}
  int Add(int x) {
    value_ += x;
    return value_;
  }
  int Get() const { return value_; }
  // Appends to a log and returns its length: the order in which calls ran.
  size_t Log(std::string who, int n) {
    log_.push_back(who + ":" + std::to_string(n));
    return log_.size();
  }
  std::vector<std::string> History() const { return log_; }
  int Pid() const { return static_cast<int>(getpid()); }
  int Fail(int) { throw std::out_of_range("no such slot"); }
  std::string Env(std::string name) const {
    const char* v = std::getenv(name.c_str());
    return v == nullptr ? "<unset>" : v;
  }

 private:
  int value_;
  std::vector<std::string> log_;
};

Counter* MakeCounter(int start) { return new Counter(start); }
std::unique_ptr<Counter> MakeBrokenCounter(int) {
  throw std::runtime_error("cannot open the ledger");
}
PRISM_REMOTE(MakeCounter, MakeBrokenCounter, &Counter::Add, &Counter::Get, &Counter::Log,
             &Counter::History, &Counter::Pid, &Counter::Fail, &Counter::Env);

class Other {
 public:
  int Ping() { return 1; }
};
Other* MakeOther() { return new Other(); }
PRISM_REMOTE(MakeOther, &Other::Ping);

// A task that calls the actor through a handle it was passed.
size_t CallFromTask(prism::ActorHandle<Counter> c, int n) {
  size_t last = 0;
  for (int i = 0; i < n; ++i)
    last = prism::Get(c.Task(&Counter::Log).Remote(std::string("task"), i));
  return last;
}
PRISM_REMOTE(CallFromTask);

int AddThroughName(std::string name, int x) {
  return prism::Get(prism::GetActor<Counter>(name).Task(&Counter::Add).Remote(x));
}
PRISM_REMOTE(AddThroughName);

std::string SlowWord(std::string word) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return word;
}
PRISM_REMOTE(SlowWord);

class ActorsTest : public ::testing::Test {
 protected:
  void SetUp() override { prism::Init({.num_cpus = 2}); }
  void TearDown() override { prism::Shutdown(); }
};

TEST_F(ActorsTest, CallsKeepState) {
  auto c = prism::Actor(MakeCounter).Remote(10);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Add).Remote(5)), 15);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Add).Remote(1)), 16);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Get).Remote()), 16);
  EXPECT_NE(prism::Get(c.Task(&Counter::Pid).Remote()), getpid());
}

TEST_F(ActorsTest, ThousandCallsFromOneCallerRunInOrder) {
  auto c = prism::Actor(MakeCounter).Remote(0);
  std::vector<prism::ObjectRef<size_t>> refs;
  for (int i = 0; i < 1000; ++i) refs.push_back(c.Task(&Counter::Log).Remote(std::string("d"), i));
  auto positions = prism::Get(refs);
  for (size_t i = 0; i < positions.size(); ++i) ASSERT_EQ(positions[i], i + 1);
  auto history = prism::Get(c.Task(&Counter::History).Remote());
  ASSERT_EQ(history.size(), 1000u);
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(history[static_cast<size_t>(i)], "d:" + std::to_string(i));
}

TEST_F(ActorsTest, TwoCallersEachKeepTheirOrder) {
  auto c = prism::Actor(MakeCounter).Remote(0);
  auto task = prism::Task(CallFromTask).Options({.num_cpus = 0}).Remote(c, 200);
  std::vector<prism::ObjectRef<size_t>> refs;
  for (int i = 0; i < 200; ++i)
    refs.push_back(c.Task(&Counter::Log).Remote(std::string("driver"), i));
  prism::Get(refs);
  EXPECT_EQ(prism::Get(task), 400u);
  auto history = prism::Get(c.Task(&Counter::History).Remote());
  ASSERT_EQ(history.size(), 400u);
  int next_driver = 0, next_task = 0;
  for (const auto& h : history) {
    if (h.rfind("driver:", 0) == 0) {
      ASSERT_EQ(h, "driver:" + std::to_string(next_driver++));
    } else {
      ASSERT_EQ(h, "task:" + std::to_string(next_task++));
    }
  }
  EXPECT_EQ(next_driver, 200);
  EXPECT_EQ(next_task, 200);
}

// Calls whose arguments are all values go to a connected actor straight from the calling
// thread; a call that waits for an argument holds back every call made after it, including
// those, until it is sent.
TEST_F(ActorsTest, ACallWaitingForItsArgumentHoldsBackTheCallsAfterIt) {
  auto c = prism::Actor(MakeCounter).Remote(0);
  prism::Get(c.Task(&Counter::Get).Remote());  // connected
  std::vector<prism::ObjectRef<size_t>> refs;
  std::vector<std::string> expected;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 10; ++i) {
      const int n = round * 10 + i;
      if (i == 4) {
        refs.push_back(
            c.Task(&Counter::Log).Remote(prism::Task(SlowWord).Remote(std::string("ref")), n));
        expected.push_back("ref:" + std::to_string(n));
      } else {
        refs.push_back(c.Task(&Counter::Log).Remote(std::string("value"), n));
        expected.push_back("value:" + std::to_string(n));
      }
    }
    if (round == 1) prism::Get(refs.back());  // the lane opens again once all went out
  }
  auto positions = prism::Get(refs);
  for (size_t i = 0; i < positions.size(); ++i) ASSERT_EQ(positions[i], i + 1);
  EXPECT_EQ(prism::Get(c.Task(&Counter::History).Remote()), expected);
}

// Many calls in flight (sent straight from the caller) when the actor's process dies: each is
// resent to the restarted actor, in order, and none is lost.
TEST_F(ActorsTest, PipelinedCallsSurviveARestart) {
  auto c = prism::Actor(MakeCounter).Options({.max_restarts = 1, .max_task_retries = -1}).Remote(0);
  int pid = prism::Get(c.Task(&Counter::Pid).Remote());
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 2000; ++i) {
    refs.push_back(c.Task(&Counter::Add).Remote(1));
    if (i == 300) {
      ASSERT_EQ(kill(pid, SIGKILL), 0);
    }
  }
  auto values = prism::Get(refs, std::chrono::seconds(60));
  ASSERT_EQ(values.size(), 2000u);
  // The restarted actor starts from 0 again and runs what it gets in order: the last call's
  // value counts the calls it ran, and values rise by one from its first.
  EXPECT_NE(prism::Get(c.Task(&Counter::Pid).Remote()), pid);
  int restart_at = -1;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] != values[i - 1] + 1) {
      ASSERT_EQ(restart_at, -1) << "one restart, so one break in the count (at " << i << ")";
      restart_at = static_cast<int>(i);
      EXPECT_EQ(values[i], 1) << "the restarted actor's first call";
    }
  }
  EXPECT_EQ(values.front(), 1);
}

TEST_F(ActorsTest, NamedActorsAreFoundByName) {
  auto c = prism::Actor(MakeCounter).Options({.name = "ledger"}).Remote(100);
  auto again = prism::GetActor<Counter>("ledger");
  EXPECT_EQ(prism::Get(again.Task(&Counter::Add).Remote(1)), 101);
  EXPECT_EQ(prism::Get(prism::Task(AddThroughName).Remote(std::string("ledger"), 2)), 103);
  EXPECT_THROW(prism::Actor(MakeCounter).Options({.name = "ledger"}).Remote(0),
               prism::InvalidArgumentError)
      << "names are unique";
  try {
    prism::GetActor<Counter>("no-such-actor");
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-actor"), std::string::npos) << e.what();
  }
}

// A name is unique within its namespace: the same name in two namespaces is two actors, and
// each is found only in its own.
TEST_F(ActorsTest, NamesLiveInNamespaces) {
  auto a = prism::Actor(MakeCounter).Options({.name = "meter", .ray_namespace = "left"}).Remote(10);
  auto b =
      prism::Actor(MakeCounter).Options({.name = "meter", .ray_namespace = "right"}).Remote(20);
  EXPECT_EQ(prism::Get(prism::GetActor<Counter>("meter", "left").Task(&Counter::Add).Remote(1)),
            11);
  EXPECT_EQ(prism::Get(prism::GetActor<Counter>("meter", "right").Task(&Counter::Add).Remote(1)),
            21);
  EXPECT_THROW(prism::GetActor<Counter>("meter"), prism::InvalidArgumentError)
      << "not in the default namespace";
  EXPECT_THROW(
      prism::Actor(MakeCounter).Options({.name = "meter", .ray_namespace = "left"}).Remote(0),
      prism::InvalidArgumentError);
  try {
    prism::GetActor<Counter>("meter", "middle");
    FAIL() << "expected InvalidArgumentError";
  } catch (const prism::InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("namespace 'middle'"), std::string::npos) << e.what();
  }
}

TEST_F(ActorsTest, KilledActorFailsCallsAtOnce) {
  auto c = prism::Actor(MakeCounter).Options({.name = "doomed"}).Remote(0);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Add).Remote(1)), 1);
  prism::Kill(c);
  try {
    prism::Get(c.Task(&Counter::Add).Remote(1), std::chrono::seconds(30));
    FAIL() << "expected ActorDiedError";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(std::string(e.what()).find("doomed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("killed"), std::string::npos) << e.what();
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(prism::Get(c.Task(&Counter::Add).Remote(1), std::chrono::seconds(30)),
               prism::ActorDiedError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2))
      << "known dead: fails at once";
  EXPECT_THROW(prism::GetActor<Counter>("doomed"), prism::InvalidArgumentError)
      << "the name is free again";
}

TEST_F(ActorsTest, SigkilledActorRestartsThenDies) {
  // Calls made while it restarts wait for it (max_task_retries = -1 resends one that met the
  // dying process).
  auto c = prism::Actor(MakeCounter)
               .Options({.name = "phoenix", .max_restarts = 2, .max_task_retries = -1})
               .Remote(7);
  for (int round = 0; round < 3; ++round) {
    int pid = prism::Get(c.Task(&Counter::Pid).Remote(), std::chrono::seconds(30));
    EXPECT_EQ(prism::Get(c.Task(&Counter::Get).Remote(), std::chrono::seconds(30)), 7)
        << "the factory rebuilt the state (round " << round << ")";
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    // The restart is not instant: calls made meanwhile wait for it, or fail once it is dead.
  }
  try {
    prism::Get(c.Task(&Counter::Get).Remote(), std::chrono::seconds(30));
    FAIL() << "expected ActorDiedError after the restarts are used up";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(std::string(e.what()).find("phoenix"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("restart"), std::string::npos) << e.what();
  }
}

TEST_F(ActorsTest, CallsInFlightAreRetriedAfterARestart) {
  auto c = prism::Actor(MakeCounter).Options({.max_restarts = 1, .max_task_retries = 1}).Remote(0);
  int pid = prism::Get(c.Task(&Counter::Pid).Remote());
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Add).Remote(3), std::chrono::seconds(30)), 3);
  EXPECT_NE(prism::Get(c.Task(&Counter::Pid).Remote()), pid);
}

TEST_F(ActorsTest, ErrorsAreClear) {
  auto c = prism::Actor(MakeCounter).Remote(0);
  try {
    prism::Get(c.Task(&Counter::Fail).Remote(1));
    FAIL() << "expected TaskError";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.remote_type(), "std::out_of_range");
    EXPECT_EQ(e.function(), "Counter::Fail");
  }
  EXPECT_EQ(prism::Get(c.Task(&Counter::Add).Remote(2)), 2)
      << "the actor survives a throwing method";

  auto broken = prism::Actor(MakeBrokenCounter).Remote(0);
  try {
    prism::Get(broken.Task(&Counter::Get).Remote(), std::chrono::seconds(30));
    FAIL() << "expected ActorDiedError";
  } catch (const prism::ActorDiedError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open the ledger"), std::string::npos) << e.what();
  }

  // A method of another class, called through a handle of the wrong type.
  auto other = prism::Actor(MakeOther).Remote();
  auto wrong = prism::ActorHandle<Counter>(other.ref());
  EXPECT_THROW(prism::Get(wrong.Task(&Counter::Get).Remote()), prism::InvalidArgumentError);
  EXPECT_EQ(prism::Get(other.Task(&Other::Ping).Remote()), 1);
  EXPECT_THROW(prism::Actor(MakeCounter).Options({.max_concurrency = 0}).Remote(0),
               prism::InvalidArgumentError);
}

TEST_F(ActorsTest, ActorGoesWhenItsHandlesGo) {
  int pid;
  {
    auto c = prism::Actor(MakeCounter).Remote(0);
    pid = prism::Get(c.Task(&Counter::Pid).Remote());
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(kill(pid, 0), 0) << "the actor's process is gone";
}

TEST_F(ActorsTest, EnvironmentVariablesPerActor) {
  auto c = prism::Actor(MakeCounter).Options({.env = {{"TEST_LEDGER", "blue"}}}).Remote(0);
  EXPECT_EQ(prism::Get(c.Task(&Counter::Env).Remote(std::string("TEST_LEDGER"))), "blue");
  auto plain = prism::Actor(MakeCounter).Remote(0);
  EXPECT_EQ(prism::Get(plain.Task(&Counter::Env).Remote(std::string("TEST_LEDGER"))), "<unset>");
  EXPECT_THROW(prism::Actor(MakeCounter).Options({.env = {{"", "x"}}}).Remote(0),
               prism::InvalidArgumentError);
}

// More actors than the worker pool's cap (4 x CPUs + 4 = 12 here): each gets a process.
TEST_F(ActorsTest, MoreActorsThanThePoolCap) {
  std::vector<prism::ActorHandle<Counter>> actors;
  for (int i = 0; i < 16; ++i) actors.push_back(prism::Actor(MakeCounter).Remote(i));
  std::vector<prism::ObjectRef<int>> refs;
  for (auto& a : actors) refs.push_back(a.Task(&Counter::Add).Remote(100));
  auto values = prism::Get(refs, std::chrono::seconds(60));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(values[static_cast<size_t>(i)], 100 + i);
}

// Two calls meet inside the actor: they only do if they run at the same time.
class Meeting {
 public:
  int Arrive() {
    arrived_++;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived_.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return arrived_.load() >= 2 ? 1 : 0;
  }

 private:
  std::atomic<int> arrived_{0};
};
Meeting* MakeMeeting() { return new Meeting(); }
PRISM_REMOTE(MakeMeeting, &Meeting::Arrive);

TEST_F(ActorsTest, ThreadedActorsRunCallsAtOnce) {
  auto m = prism::Actor(MakeMeeting).Options({.max_concurrency = 2}).Remote();
  auto a = m.Task(&Meeting::Arrive).Remote();
  auto b = m.Task(&Meeting::Arrive).Remote();  // meets the first: both must run at once
  EXPECT_EQ(prism::Get(a, std::chrono::seconds(30)), 1);
  EXPECT_EQ(prism::Get(b, std::chrono::seconds(30)), 1);
}

}  // namespace

// A standalone daemon: `prism start --head`, drivers that join with Init({.address = "auto"}),
// `prism status`, and `prism stop`.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "e2e/run_command.h"

namespace fs = std::filesystem;

namespace {

int Cube(int x) { return x * x * x; }
PRISM_REMOTE(Cube);

using prism::testing::RunCommand;

TEST(StandaloneTest, StartJoinStatusStop) {
  // A private session root, so that no other daemon of this user is touched.
  std::string root = (fs::temp_directory_path() / "prism-standalone-XXXXXX").string();
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  setenv("PRISM_TMPDIR", root.c_str(), 1);
  std::string tool = PRISM_TOOL;
  std::string out;
  ASSERT_EQ(
      RunCommand(
          tool + " start --head --port 0 --node-ip 127.0.0.1 --num-cpus 1 --resources widget=3",
          &out),
      0)
      << out;
  EXPECT_NE(out.find("head node started"), std::string::npos) << out;

  prism::Init({.address = "auto"});
  EXPECT_EQ(prism::Get(prism::Task(Cube).Remote(3)), 27);
  EXPECT_EQ(prism::Get(prism::Task(Cube).Options({.resources = {{"widget", 2}}}).Remote(2)), 8);
  // A standalone cluster may grow, so a request nothing can run now waits instead of failing.
  auto waits = prism::Task(Cube).Options({.resources = {{"widget", 5}}}).Remote(1);
  EXPECT_THROW(prism::Get(waits, std::chrono::milliseconds(300)), prism::GetTimeoutError);

  std::string status;
  ASSERT_EQ(RunCommand(tool + " status", &status), 0) << status;
  EXPECT_NE(status.find("CPU"), std::string::npos) << status;
  EXPECT_NE(status.find("widget"), std::string::npos) << status;
  EXPECT_NE(status.find("drivers: 1"), std::string::npos) << status;
  EXPECT_NE(status.find("infeasible demand: 1 request(s) for {CPU=1,widget=5}"), std::string::npos)
      << status;
  EXPECT_NE(status.find("object store:"), std::string::npos) << status;
  EXPECT_NE(status.find("MiB pinned"), std::string::npos) << status;
  EXPECT_NE(status.find("MiB spilled"), std::string::npos) << status;
  prism::Shutdown();

  // The daemon outlives its drivers: a second driver joins the same cluster.
  prism::Init({.address = "auto"});
  EXPECT_EQ(prism::Get(prism::Task(Cube).Remote(4)), 64);
  prism::Shutdown();

  // Another driver leaves the daemon's whole worker budget (4 x 1 CPU + 4 = 8) idle. This
  // driver's task still runs: the daemon stops one of the other job's idle workers for it.
  std::string rdv = root + "/rendezvous";
  fs::create_directories(rdv);
  FILE* other = popen((std::string(PRISM_IDLE_WORKERS_DRIVER) + " " + rdv + " 8").c_str(), "w");
  ASSERT_NE(other, nullptr);
  for (int i = 0; i < 2000 && !fs::exists(rdv); ++i) usleep(1000);
  auto count_files = [&] {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(rdv)) ++n;
    return n;
  };
  for (int i = 0; i < 3000 && count_files() < 8; ++i) usleep(10000);
  ASSERT_EQ(count_files(), 8) << "the other driver did not start its 8 workers";
  std::string busy;
  for (int i = 0; i < 300; ++i) {  // until its tasks have returned and the workers are idle
    busy.clear();
    ASSERT_EQ(RunCommand(tool + " status", &busy), 0);
    if (busy.find("8 alive, 8 idle") != std::string::npos) break;
    usleep(20000);
  }
  EXPECT_NE(busy.find("8 alive, 8 idle"), std::string::npos) << busy;
  prism::Init({.address = "auto"});
  EXPECT_EQ(prism::Get(prism::Task(Cube).Remote(5), std::chrono::seconds(30)), 125);
  prism::Shutdown();
  pclose(other);  // closes its stdin: it shuts down
  fs::remove_all(rdv);

  std::string stop;
  ASSERT_EQ(RunCommand(tool + " stop", &stop), 0) << stop;
  std::string again;
  EXPECT_NE(RunCommand(tool + " status", &again), 0) << "no daemon is left to answer";
  EXPECT_THROW(prism::Init({.address = "auto"}), prism::RuntimeError);
  // Nothing of the session is left but its log.
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) {
      EXPECT_EQ(e.path().filename(), "daemon.log") << e.path();
    } else if (e.is_socket()) {
      ADD_FAILURE() << "socket left behind: " << e.path();
    }
  }
  unsetenv("PRISM_TMPDIR");
  fs::remove_all(root);
}

// A detached named actor started by one driver is reachable by name from a second driver after
// the first exited.
TEST(StandaloneTest, DetachedActorOutlivesItsDriver) {
  std::string root = (fs::temp_directory_path() / "prism-standalone-XXXXXX").string();
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  setenv("PRISM_TMPDIR", root.c_str(), 1);
  std::string tool = PRISM_TOOL, driver = PRISM_ACTOR_DRIVER;
  std::string out;
  ASSERT_EQ(RunCommand(tool + " start --head --port 0 --node-ip 127.0.0.1 --num-cpus 2", &out), 0)
      << out;
  std::string created, used, again;
  EXPECT_EQ(RunCommand(driver + " create keeper", &created), 0) << created;
  EXPECT_NE(created.find("created: 5"), std::string::npos) << created;
  EXPECT_EQ(RunCommand(tool + " status", &out), 0) << out;
  EXPECT_NE(out.find("keeper"), std::string::npos) << out;
  EXPECT_NE(out.find("ALIVE"), std::string::npos) << out;
  EXPECT_NE(out.find("detached"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(driver + " use keeper", &used), 0) << used;
  EXPECT_NE(used.find("value: 6"), std::string::npos) << used;
  EXPECT_EQ(RunCommand(tool + " status", &out), 0) << out;
  EXPECT_NE(out.find("actors: 0 alive or starting, 1 dead"), std::string::npos) << out;
  // The second driver killed it: the name is free, the lookup fails.
  EXPECT_NE(RunCommand(driver + " use keeper", &again), 0) << again;
  EXPECT_NE(again.find("no live actor is named 'keeper'"), std::string::npos) << again;
  ASSERT_EQ(RunCommand(tool + " stop", &out), 0) << out;
  unsetenv("PRISM_TMPDIR");
  fs::remove_all(root);
}

// A detached placement group outlives the job that created it; the job's other groups go with it.
TEST(StandaloneTest, DetachedPlacementGroupOutlivesItsJob) {
  std::string root = (fs::temp_directory_path() / "prism-standalone-XXXXXX").string();
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  setenv("PRISM_TMPDIR", root.c_str(), 1);
  std::string tool = PRISM_TOOL, driver = PRISM_ACTOR_DRIVER;
  std::string out, created, found;
  ASSERT_EQ(RunCommand(tool + " start --head --port 0 --node-ip 127.0.0.1 --num-cpus 2", &out), 0)
      << out;
  EXPECT_EQ(RunCommand(driver + " group pinned", &created), 0) << created;
  EXPECT_NE(created.find("groups ready: 1"), std::string::npos) << created;
  EXPECT_EQ(RunCommand(driver + " find-group pinned", &found), 0) << found;
  EXPECT_NE(found.find("pinned: exists"), std::string::npos) << found;
  EXPECT_NE(found.find("pinned-job: gone"), std::string::npos) << found;
  ASSERT_EQ(RunCommand(tool + " stop", &out), 0) << out;
  unsetenv("PRISM_TMPDIR");
  fs::remove_all(root);
}

// What workers print reaches the driver, each line labelled with the task or actor it came from.
TEST(OutputTest, WorkerOutputReachesTheDriverWithItsLabel) {
  std::string out;
  ASSERT_EQ(RunCommand(PRISM_OUTPUT_DRIVER, &out), 0) << out;
  EXPECT_NE(out.find("(Shout pid="), std::string::npos) << out;
  EXPECT_NE(out.find(") task line 7"), std::string::npos) << out;
  EXPECT_NE(out.find(") task warning 7"), std::string::npos) << out;
  EXPECT_NE(out.find("(scribe pid="), std::string::npos) << out;
  EXPECT_NE(out.find(") actor line 8"), std::string::npos) << out;
  EXPECT_EQ(out.find("\x1e"), std::string::npos) << "no marker leaks into the output";
  EXPECT_NE(out.find("driver done"), std::string::npos) << out;
  std::string quiet;
  ASSERT_EQ(RunCommand(std::string("PRISM_LOG_TO_DRIVER=0 ") + PRISM_OUTPUT_DRIVER, &quiet), 0)
      << quiet;
  EXPECT_EQ(quiet.find("task line"), std::string::npos)
      << "PRISM_LOG_TO_DRIVER=0 silences it: " << quiet;
}

}  // namespace

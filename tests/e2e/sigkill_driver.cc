// A driver for the fault test: starts prism, keeps a worker busy, reports, and waits to be killed.
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

int Sleeper(int seconds) {
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  return seconds;
}
PRISM_REMOTE(Sleeper);

int Pid() { return static_cast<int>(getpid()); }
PRISM_REMOTE(Pid);

int main() {
  prism::Init({.num_cpus = 2});
  int worker = prism::Get(prism::Task(Pid).Remote());
  auto busy = prism::Task(Sleeper).Remote(3600);
  std::printf("ready %d\n", worker);
  std::fflush(stdout);
  prism::Get(busy);
  return 0;
}

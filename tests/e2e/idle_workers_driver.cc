// A second driver for the standalone test: joins the running daemon, makes it start `n` workers
// (n tasks that meet at a rendezvous), leaves them idle, reports, and waits for stdin to close.
#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "e2e/rendezvous.h"

int Rendezvous(std::string dir, int n) {
  return prism::testing::MeetIn(dir, n, std::chrono::seconds(20));
}
PRISM_REMOTE(Rendezvous);

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  if (argc != 3) return 2;
  std::string dir = argv[1];
  int n = std::atoi(argv[2]);
  prism::Init({.address = "auto"});
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < n; ++i) {
    refs.push_back(prism::Task(Rendezvous).Options({.num_cpus = 0}).Remote(dir, n));
  }
  prism::Get(refs);
  std::printf("ready\n");
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  prism::Shutdown();
  return 0;
}

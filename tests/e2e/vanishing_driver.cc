// A driver whose executable is gone from its path once it runs (as on a node that lacks the
// program): a task here still runs (its workers start from the file it opened), a task pinned to
// another node fails with why. Arguments: the cluster's address, the other node's id.
#include <prism/prism.h>
#include <unistd.h>

#include <cstdio>
#include <string>

std::string Where() { return prism::GetNodeId(); }
PRISM_REMOTE(Where);

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  if (argc != 3) return 2;
  prism::Init({.address = argv[1]});
  if (::unlink(argv[0]) != 0) return 3;
  std::printf("here: %s\n", prism::Get(prism::Task(Where).Remote()).c_str());
  try {
    prism::Get(prism::Task(Where).Options({.node_affinity = {argv[2], false}}).Remote());
    std::printf("there: ran\n");
  } catch (const prism::Error& e) {
    std::printf("there: failed: %s\n", e.what());
  }
  prism::Shutdown();
  return 0;
}

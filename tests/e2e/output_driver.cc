// Prints from a task and from an actor; the test checks that the lines reach this driver's
// stdout and stderr with their labels.
#include <prism/prism.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

int Shout(int n) {
  std::cout << "task line " << n << std::endl;
  std::cout << "no newline at the end" << std::flush;  // must not swallow the next marker
  std::fprintf(stderr, "task warning %d\n", n);
  return n;
}
PRISM_REMOTE(Shout);

class Scribe {
 public:
  int Write(int n) {
    std::printf("actor line %d\n", n);
    return n;
  }
};
Scribe* MakeScribe() { return new Scribe(); }
PRISM_REMOTE(MakeScribe, &Scribe::Write);

int main() {
  if (prism::IsWorkerProcess()) prism::Init();
  prism::Init({.num_cpus = 1});
  prism::Get(prism::Task(Shout).Remote(7));
  auto s = prism::Actor(MakeScribe).Options({.name = "scribe"}).Remote();
  prism::Get(s.Task(&Scribe::Write).Remote(8));
  // Output travels worker -> daemon -> driver, apart from the results: give it a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::printf("driver done\n");
  prism::Shutdown();
  return 0;
}

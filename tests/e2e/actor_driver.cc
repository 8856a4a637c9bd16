// A driver for the standalone test's detached actors. `actor_driver create NAME` joins the
// running daemon, creates a detached named counter starting at 5 and exits; `actor_driver use
// NAME` finds it by name, adds 1, prints the result and kills it.
#include <prism/prism.h>

#include <cstdio>
#include <string>

class Tally {
 public:
  explicit Tally(int start) : value_(start) {}
  int Add(int x) { return value_ += x; }

 private:
  int value_;
};
Tally* MakeTally(int start) { return new Tally(start); }
PRISM_REMOTE(MakeTally, &Tally::Add);

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  if (argc != 3) return 2;
  std::string mode = argv[1], name = argv[2];
  prism::Init({.address = "auto"});
  if (mode == "create") {
    auto t = prism::Actor(MakeTally).Options({.name = name, .detached = true}).Remote(5);
    std::printf("created: %d\n", prism::Get(t.Task(&Tally::Add).Remote(0)));
  } else {
    auto t = prism::GetActor<Tally>(name);
    std::printf("value: %d\n", prism::Get(t.Task(&Tally::Add).Remote(1)));
    prism::Kill(t);
  }
  prism::Shutdown();
  return 0;
}

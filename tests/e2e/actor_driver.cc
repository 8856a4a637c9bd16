// A driver for the standalone test's detached actors and placement groups. `actor_driver create
// NAME` joins the running daemon, creates a detached named counter starting at 5 and exits;
// `actor_driver use NAME` finds it by name, adds 1, prints the result and kills it.
// `actor_driver group NAME` creates a detached placement group and a job-scoped one (NAME-job);
// `actor_driver find-group NAME` says whether each still exists, and removes the detached one.
#include <prism/prism.h>

#include <chrono>
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
  } else if (mode == "group") {
    auto kept =
        prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}}, .name = name, .detached = true});
    auto gone = prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}}, .name = name + "-job"});
    std::printf("groups ready: %d\n",
                kept.Wait(std::chrono::seconds(30)) && gone.Wait(std::chrono::seconds(30)));
  } else if (mode == "find-group") {
    for (const std::string& n : {name, name + "-job"}) {
      try {
        auto g = prism::GetPlacementGroup(n);
        std::printf("%s: exists\n", n.c_str());
        if (n == name) prism::RemovePlacementGroup(g);
      } catch (const prism::Error&) {
        std::printf("%s: gone\n", n.c_str());
      }
    }
  } else {
    auto t = prism::GetActor<Tally>(name);
    std::printf("value: %d\n", prism::Get(t.Task(&Tally::Add).Remote(1)));
    prism::Kill(t);
  }
  prism::Shutdown();
  return 0;
}

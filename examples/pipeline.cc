// A streaming task inside a placement group: a "model" actor and its token stream share one
// reserved bundle, and the driver prints each token as soon as it is written.
#include <prism/prism.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

// Stands in for a model: splits a prompt into words, one value per word.
void Tokens(prism::StreamWriter<std::string>& out, std::string prompt) {
  std::istringstream words(prompt);
  for (std::string w; words >> w;) out.Write(w);
}

class Tally {
 public:
  int Add(int n) { return total_ += n; }

 private:
  int total_ = 0;
};
Tally* MakeTally() { return new Tally(); }

PRISM_REMOTE(Tokens, MakeTally, &Tally::Add);

int main() {
  if (prism::IsWorkerProcess()) prism::Init();
  prism::Init({.num_cpus = 2});
  // Two CPUs reserved together: one for the tally actor, one for the streaming task.
  auto pg = prism::CreatePlacementGroup(
      {.bundles = {{{"CPU", 1}}, {{"CPU", 1}}}, .strategy = prism::PlacementStrategy::kStrictPack});
  if (!pg.Wait(std::chrono::seconds(30))) {
    std::cerr << "the placement group was not created\n";
    return 1;
  }
  auto tally =
      prism::Actor(MakeTally)
          .Options({.num_cpus = 1, .placement_group = pg, .placement_group_bundle_index = 0})
          .Remote();
  auto stream = prism::Task(Tokens)
                    .Options({.placement_group = pg, .placement_group_bundle_index = 1})
                    .Remote(std::string("streams reach the caller while the task still runs"));
  int total = 0;
  while (auto ref = stream.Next()) {
    std::string token = prism::Get(*ref);
    total = prism::Get(tally.Task(&Tally::Add).Remote(static_cast<int>(token.size())));
    std::cout << token << ' ' << std::flush;
  }
  std::cout << "\n" << total << " characters\n";
  prism::RemovePlacementGroup(pg);
  prism::Shutdown();
  return 0;
}

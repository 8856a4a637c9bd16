// The seed example: eight squares computed in worker processes.
#include <prism/prism.h>

#include <iostream>
#include <vector>

int Square(int x) { return x * x; }
PRISM_REMOTE(Square);

int main() {
  prism::Init();  // starts a local cluster; nothing to start by hand
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 8; ++i) refs.push_back(prism::Task(Square).Remote(i));
  std::vector<int> values = prism::Get(refs);
  std::cout << "[";
  for (size_t i = 0; i < values.size(); ++i) std::cout << (i ? ", " : "") << values[i];
  std::cout << "]" << std::endl;
  prism::Shutdown();
}

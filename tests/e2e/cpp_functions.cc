// C++ remote functions in a shared library of their own: the generic C++ worker loads it from the
// code search path, for Python drivers (prism.cpp_function) and C++ drivers that do not link it.
#include <prism/prism.h>

#include <map>
#include <string>
#include <vector>

namespace {

int CrossSquare(int x) { return x * x; }
std::string CrossGreet(std::string name) { return "hello " + name; }
std::map<std::string, double> CrossStats(std::vector<double> values) {
  double sum = 0;
  for (double v : values) sum += v;
  return {{"count", static_cast<double>(values.size())}, {"sum", sum}};
}

}  // namespace

PRISM_REMOTE(CrossSquare, CrossGreet, CrossStats);

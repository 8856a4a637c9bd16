// main() for end-to-end tests: in a worker process started by prism, Init() runs the worker loop
// and never returns, so no test runs twice.
#include <gtest/gtest.h>
#include <prism/prism.h>

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

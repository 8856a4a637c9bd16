// Runs a shell command for an end-to-end test: its exit code, and its stdout and stderr together.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace prism::testing {

inline int RunCommand(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 512> buf{};
  while (fgets(buf.data(), buf.size(), p) != nullptr) *out += buf.data();
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace prism::testing

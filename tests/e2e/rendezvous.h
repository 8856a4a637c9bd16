// A meeting point for tasks in tests: each task marks its arrival in a folder, then waits until
// `n` have arrived. Only tasks that run at the same time, in different workers, all return
// quickly; tasks queued behind each other on one worker wait out the deadline.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace prism::testing {

/// Returns this process's pid once `n` tasks have arrived in `dir`, or after `deadline`.
inline int MeetIn(const std::string& dir, int n,
                  std::chrono::seconds deadline_after = std::chrono::seconds(10)) {
  std::ofstream(dir + "/" + std::to_string(getpid())) << "here";
  auto deadline = std::chrono::steady_clock::now() + deadline_after;
  while (std::chrono::steady_clock::now() < deadline) {
    int arrived = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++arrived;
    if (arrived >= n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return static_cast<int>(getpid());
}

}  // namespace prism::testing

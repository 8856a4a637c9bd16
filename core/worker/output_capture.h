// A worker's stdout and stderr, captured and sent to its job's driver line by line, each line
// labelled with the task or actor that printed it, as Ray does ("(Square pid=123) text").
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "base/mutex.h"
#include "prism.pb.h"

namespace prism {

class OutputCapture {
 public:
  /// `send` gets batches of lines (from the capture thread).
  explicit OutputCapture(std::function<void(rpc::WorkerOutput)> send);
  ~OutputCapture();
  /// Points fds 1 and 2 at pipes read by a thread of this object. False if that failed (output
  /// then goes where it went before).
  bool Start();
  /// Marks that what follows is printed by `label` (flushes the C and C++ streams first).
  void SetLabel(const std::string& label);
  /// Flushes, forwards what is left, and stops the thread; fds 1 and 2 go back to where they were.
  void Stop();

 private:
  void Run();

  std::function<void(rpc::WorkerOutput)> send_;
  int out_pipe_[2] = {-1, -1};
  int err_pipe_[2] = {-1, -1};
  int saved_out_ = -1, saved_err_ = -1;
  std::thread thread_;
  std::atomic<bool> running_{false};
  Mutex label_mu_;
  std::string label_;  // the last label written
};

}  // namespace prism

// The reply a thread waits for to the call it sent last by a submitter's fast lane, which the
// thread reads off the connection itself while it spins in a Wait (see
// TaskSubmitter::ReadOwnReply): the round trip then needs neither a hand-off to the event loop
// nor its wake-up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/ids.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

/// One per thread and kind of submitter (a thread_local of the submitter's). Only for a call
/// whose result the event loop need not look at: one return value, no refs inside its
/// arguments (they go before the result is seen).
class OwnReply {
 public:
  /// The calling thread just sent `spec`'s call on `conn`, alone on it as far as it knows (no
  /// other call out, and its frame was the connection's last).
  void Sent(const void* submitter, const std::shared_ptr<rpc::Connection>& conn, const TaskId& task,
            uint64_t attempt, const ObjectId& return_id);
  /// Nothing to read for this call (not eligible, or answered otherwise).
  void Forget() { waiting_ = false; }
  /// One check of a Wait's spin (`last`: the spin ended): claims the connection (so incoming
  /// frames do not wake the loop) and reads it with `take` while this thread waits for a reply of
  /// `submitter`'s; the claim ends with the reading. Only while the connection carried nothing
  /// after the call (otherwise the loop pipelines there, and has mostly read the reply already).
  void Read(const void* submitter, bool last, const rpc::Connection::TakeHere& take);
  /// Within `take`: the awaited call's plain reply value (one inline value, no refs or device
  /// objects inside, no error), moved into `*value`; false for any other frame, which is the
  /// loop's. Either way this thread reads no further (the frames after one handed to the loop
  /// go there too, in order).
  bool TakePlain(rpc::Envelope& msg, std::string* value);

  const TaskId& task() const { return task_; }
  uint64_t attempt() const { return attempt_; }
  const ObjectId& return_id() const { return return_id_; }

 private:
  void Release();

  const void* submitter_ = nullptr;  // whose (a thread may outlive a runtime)
  std::weak_ptr<rpc::Connection> conn_;
  uint64_t frames_sent_ = 0;  // the connection's frames_queued() after the call
  TaskId task_;
  uint64_t attempt_ = 0;
  ObjectId return_id_;
  bool waiting_ = false;
  std::shared_ptr<rpc::Connection> claimed_;  // while this thread reads it (within one spin)
};

}  // namespace prism

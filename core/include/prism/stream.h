// Streaming (generator) tasks: the task writes values one at a time, and the caller reads each
// one, as a ref, as soon as it was written, before the task has ended.
//
//   void Count(prism::StreamWriter<int>& out, int n) {
//     for (int i = 0; i < n; ++i) out.Write(i);
//   }
//   PRISM_REMOTE(Count);
//   prism::ObjectRefStream<int> s = prism::Task(Count).Remote(100);
//   while (auto ref = s.Next()) std::cout << prism::Get(*ref) << "\n";
#pragma once

#include <prism/internal/runtime_api.h>
#include <prism/object_ref.h>
#include <prism/serialization.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

namespace prism {

/// What a streaming task writes its values to: the first parameter of a remote function
/// `void F(prism::StreamWriter<T>&, ...)`. Made by prism for each run of the task.
template <typename T>
class StreamWriter {
 public:
  StreamWriter() = default;
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;
  /// Sends `value` to the caller now (small values inline, large ones through the object
  /// store); it becomes the next ref of the caller's ObjectRefStream. Throws
  /// ObjectStoreFullError as Put does, and InvalidArgumentError outside its task.
  void Write(const T& value) {
    internal::StreamWrite(internal::Encode(value));
    ++written_;
  }
  /// Values written so far.
  uint64_t written() const { return written_; }

 private:
  uint64_t written_ = 0;
};

/// The caller's side of a streaming task: the refs of its values, in the order written.
/// Values stay alive while their refs (or the stream, for values not read yet) do. Not
/// thread-safe: read it from one thread at a time.
template <typename T>
class ObjectRefStream {
 public:
  ObjectRefStream() = default;
  explicit ObjectRefStream(std::shared_ptr<internal::StreamHandle> h) : h_(std::move(h)) {}

  /// The ref of the next value, waiting until the task wrote it; nullopt once the task ended
  /// and every value was read. If the task failed (it threw, was cancelled, or its worker died
  /// with no retries left), the ref after its last value holds that error: Get on it throws it.
  std::optional<ObjectRef<T>> Next() { return NextWithin(-1); }
  /// As Next(), but throws GetTimeoutError once `timeout` passed with no new value.
  std::optional<ObjectRef<T>> Next(std::chrono::milliseconds timeout) {
    return NextWithin(timeout.count());
  }
  /// The task's own return object: ready once it ended. Cancel(stream.completion()) cancels it.
  ObjectRef<void> completion() const { return ObjectRef<void>(h_ ? h_->completion() : nullptr); }
  bool valid() const { return h_ != nullptr; }

 private:
  std::optional<ObjectRef<T>> NextWithin(int64_t timeout_ms) {
    if (!h_) throw InvalidArgumentError("Next on an empty ObjectRefStream");
    internal::RefPtr next = h_->Next(timeout_ms);
    if (!next) return std::nullopt;
    return ObjectRef<T>(std::move(next));
  }
  std::shared_ptr<internal::StreamHandle> h_;
};

}  // namespace prism

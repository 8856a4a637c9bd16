// Frames on a local socket: a 4-byte little-endian length, then one serialized rpc::Envelope.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "prism.pb.h"

namespace prism::rpc {

inline constexpr uint32_t kProtocolVersion = 2;
inline constexpr size_t kFrameHeaderBytes = 4;
/// Default cap on one frame; a larger length prefix closes the connection.
inline constexpr size_t kDefaultMaxFrameBytes = size_t{256} << 20;

/// Appends the frame for `msg` to `out`.
void AppendFrame(const Envelope& msg, std::string* out);

/// Splits a byte stream into envelopes. Not thread-safe; one per connection.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes) : max_frame_(max_frame_bytes) {}
  /// Space to read into: at least `min_bytes` writable bytes. Call Commit(n) after reading n.
  char* WritableSpace(size_t min_bytes, size_t* available);
  void Commit(size_t n) { end_ += n; }
  /// Decodes every complete frame, calling `on_frame` for each while it returns true. Returns
  /// an error for an oversized length prefix or a frame that is not a valid Envelope.
  Status Drain(const std::function<bool(Envelope&)>& on_frame);
  /// Parses each frame into a protobuf arena of its own (one allocation for the whole message,
  /// instead of one per string and sub-message), which a handler keeps with current(). For
  /// frames that are kept past their handler on another thread (a worker's pushed tasks): the
  /// message is built and freed in one piece, not a few dozen allocations made by one thread
  /// and freed by another.
  void ParseOnArenas() { arenas_ = true; }
  /// Within `on_frame`, with ParseOnArenas(): the frame being delivered, as a pointer that keeps
  /// it (and its arena) alive; null otherwise.
  const std::shared_ptr<Envelope>& current() const { return current_; }
  /// The bytes received but not decoded yet (to hand the stream to another reader).
  std::string TakePending() {
    std::string out(buf_.data() + begin_, end_ - begin_);
    begin_ = end_ = 0;
    return out;
  }

 private:
  size_t max_frame_;
  bool arenas_ = false;
  std::shared_ptr<Envelope> current_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
};

}  // namespace prism::rpc

#include "rpc/frame.h"

#include <algorithm>
#include <cstring>

#include "rpc/message_arena.h"

namespace prism::rpc {
namespace {

// An envelope and its arena, in one allocation.
std::shared_ptr<Envelope> NewArenaEnvelope() {
  auto frame = std::make_shared<MessageArena>();
  Envelope* msg = google::protobuf::Arena::CreateMessage<Envelope>(frame->get());
  return std::shared_ptr<Envelope>(std::move(frame), msg);  // (shares the frame's ownership)
}

}  // namespace

void AppendFrame(const Envelope& msg, std::string* out) {
  size_t n = msg.ByteSizeLong();
  size_t at = out->size();
  out->resize(at + kFrameHeaderBytes + n);
  uint32_t len = static_cast<uint32_t>(n);
  char* p = out->data() + at;
  p[0] = static_cast<char>(len & 0xff);
  p[1] = static_cast<char>((len >> 8) & 0xff);
  p[2] = static_cast<char>((len >> 16) & 0xff);
  p[3] = static_cast<char>((len >> 24) & 0xff);
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p + kFrameHeaderBytes));
}

char* FrameDecoder::WritableSpace(size_t min_bytes, size_t* available) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (buf_.size() - end_ < min_bytes) {
    if (begin_ > 0) {  // compact before growing
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < min_bytes) buf_.resize(std::max(end_ + min_bytes, 2 * buf_.size()));
  }
  *available = buf_.size() - end_;
  return buf_.data() + end_;
}

Status FrameDecoder::Drain(const std::function<bool(Envelope&)>& on_frame) {
  while (end_ - begin_ >= kFrameHeaderBytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
    uint32_t len =
        uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
    if (len > max_frame_) {
      return Status::ProtocolError("frame of " + std::to_string(len) +
                                   " bytes exceeds the limit of " + std::to_string(max_frame_) +
                                   " bytes");
    }
    // An incomplete frame waits for more bytes; the buffer grows only as they arrive, so a
    // large length prefix alone costs no memory.
    if (end_ - begin_ < kFrameHeaderBytes + len) break;
    std::shared_ptr<Envelope> held;  // with arenas_: the frame, on its own arena
    Envelope local;
    Envelope* msg = arenas_ ? (held = NewArenaEnvelope()).get() : &local;
    if (!msg->ParseFromArray(buf_.data() + begin_ + kFrameHeaderBytes, static_cast<int>(len))) {
      return Status::ProtocolError("a frame of " + std::to_string(len) +
                                   " bytes is not a valid message");
    }
    begin_ += kFrameHeaderBytes + len;
    current_ = std::move(held);
    const bool more = on_frame(*msg);
    current_.reset();
    if (!more) return Status::OK();
  }
  return Status::OK();
}

}  // namespace prism::rpc

// A protobuf arena that starts in a block of its own memory.
#pragma once

#include <google/protobuf/arena.h>

#include <cstddef>

namespace prism::rpc {

/// An arena whose first block is inside it: a message of ordinary size made on it (a task's
/// spec, a frame) takes this one allocation, where a message on the heap takes one per string
/// and sub-message, and is freed in one piece. Larger ones grow into more blocks.
class MessageArena {
 public:
  MessageArena() : arena_(Options(first_)) {}
  MessageArena(const MessageArena&) = delete;
  MessageArena& operator=(const MessageArena&) = delete;
  google::protobuf::Arena* get() { return &arena_; }

 private:
  static constexpr size_t kFirstBlock =
      1024;  // a task's spec with small arguments takes ~650 bytes
  static google::protobuf::ArenaOptions Options(char* first) {
    google::protobuf::ArenaOptions options;
    options.initial_block = first;
    options.initial_block_size = kFirstBlock;
    return options;
  }
  alignas(std::max_align_t) char first_[kFirstBlock];
  google::protobuf::Arena arena_;  // after first_: destroyed before it
};

}  // namespace prism::rpc

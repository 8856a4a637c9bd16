// The store arena's allocator: best fit over a free list kept both by address (to merge
// neighbours on free) and by size (to find the smallest hole that fits). Best fit with immediate
// coalescing keeps fragmentation low under mixed sizes (the classic result of Johnstone and
// Wilson), and every operation is O(log n) in the number of holes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace prism {

class ArenaAllocator {
 public:
  /// Manages offsets [0, capacity). Every block starts on an `alignment` boundary (a power of 2)
  /// and its size is rounded up to one.
  explicit ArenaAllocator(uint64_t capacity, uint64_t alignment = 64);

  /// The offset of a free block of at least `size` bytes, or nullopt when no hole is big enough.
  std::optional<uint64_t> Allocate(uint64_t size);
  /// Returns a block; false (and nothing changes) if `offset` is not an allocated block.
  bool Free(uint64_t offset);

  uint64_t capacity() const { return capacity_; }
  /// Bytes in allocated blocks (after rounding).
  uint64_t used() const { return used_; }
  /// The largest block Allocate() could return now.
  uint64_t largest_free() const;
  size_t num_blocks() const { return blocks_.size(); }
  size_t num_holes() const { return holes_by_offset_.size(); }
  /// The rounded size of an allocated block, 0 if none starts at `offset`.
  uint64_t BlockSize(uint64_t offset) const;

 private:
  void AddHole(uint64_t offset, uint64_t size);
  void RemoveHole(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t capacity_;
  uint64_t alignment_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> holes_by_offset_;           // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> holes_by_size_;  // (size, offset)
  std::map<uint64_t, uint64_t> blocks_;                    // offset -> size
};

}  // namespace prism

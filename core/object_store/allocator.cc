#include "object_store/allocator.h"

#include <iterator>

namespace prism {

ArenaAllocator::ArenaAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity & ~(alignment - 1)), alignment_(alignment) {
  if (capacity_ > 0) AddHole(0, capacity_);
}

void ArenaAllocator::AddHole(uint64_t offset, uint64_t size) {
  holes_by_offset_.emplace(offset, size);
  holes_by_size_.emplace(size, offset);
}

void ArenaAllocator::RemoveHole(std::map<uint64_t, uint64_t>::iterator it) {
  holes_by_size_.erase({it->second, it->first});
  holes_by_offset_.erase(it);
}

std::optional<uint64_t> ArenaAllocator::Allocate(uint64_t size) {
  if (size == 0) size = 1;
  if (size > capacity_) return std::nullopt;
  uint64_t rounded = (size + alignment_ - 1) & ~(alignment_ - 1);
  // The smallest hole that fits; among equals, the lowest address (keeps used pages warm).
  auto fit = holes_by_size_.lower_bound({rounded, 0});
  if (fit == holes_by_size_.end()) return std::nullopt;
  uint64_t hole_size = fit->first, offset = fit->second;
  RemoveHole(holes_by_offset_.find(offset));
  if (hole_size > rounded) AddHole(offset + rounded, hole_size - rounded);
  blocks_.emplace(offset, rounded);
  used_ += rounded;
  return offset;
}

bool ArenaAllocator::Free(uint64_t offset) {
  auto b = blocks_.find(offset);
  if (b == blocks_.end()) return false;
  uint64_t size = b->second;
  blocks_.erase(b);
  used_ -= size;
  // Merge with the hole after and the hole before, if they touch.
  auto next = holes_by_offset_.lower_bound(offset);
  if (next != holes_by_offset_.end() && next->first == offset + size) {
    size += next->second;
    RemoveHole(next);
  }
  auto after = holes_by_offset_.lower_bound(offset);
  if (after != holes_by_offset_.begin()) {
    auto prev = std::prev(after);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      RemoveHole(prev);
    }
  }
  AddHole(offset, size);
  return true;
}

uint64_t ArenaAllocator::largest_free() const {
  return holes_by_size_.empty() ? 0 : holes_by_size_.rbegin()->first;
}

uint64_t ArenaAllocator::BlockSize(uint64_t offset) const {
  auto b = blocks_.find(offset);
  return b == blocks_.end() ? 0 : b->second;
}

}  // namespace prism

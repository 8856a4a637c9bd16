// Object ids as the public API sees them. docs/protocol.md gives the layout.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace prism {

/// A fixed-size binary id. `N` bytes, compared and hashed bytewise, printed as hex.
template <size_t N, typename Tag>
class FixedId {
 public:
  static constexpr size_t kSize = N;
  FixedId() { bytes_.fill(0); }
  static FixedId FromBinary(std::string_view b) {
    FixedId id;
    if (b.size() == N) std::memcpy(id.bytes_.data(), b.data(), N);
    return id;
  }
  static bool IsValidBinary(std::string_view b) { return b.size() == N; }
  std::string Binary() const {
    return std::string(reinterpret_cast<const char*>(bytes_.data()), N);
  }
  std::string Hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s(2 * N, '0');
    for (size_t i = 0; i < N; ++i) {
      s[2 * i] = kDigits[bytes_[i] >> 4];
      s[2 * i + 1] = kDigits[bytes_[i] & 0xf];
    }
    return s;
  }
  bool IsNil() const {
    for (auto b : bytes_) {
      if (b != 0) return false;
    }
    return true;
  }
  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* mutable_data() { return bytes_.data(); }
  bool operator==(const FixedId& o) const { return bytes_ == o.bytes_; }
  bool operator!=(const FixedId& o) const { return bytes_ != o.bytes_; }
  bool operator<(const FixedId& o) const { return bytes_ < o.bytes_; }
  /// Abseil's hash containers hash the bytes with Abseil's own hash (no Abseil header needed).
  template <typename H>
  friend H AbslHashValue(H h, const FixedId& id) {
    return H::combine_contiguous(std::move(h), id.bytes_.data(), N);
  }
  size_t Hash() const {
    uint64_t h = 1469598103934665603ull;
    for (auto b : bytes_) h = (h ^ b) * 1099511628211ull;
    return static_cast<size_t>(h);
  }

 private:
  std::array<uint8_t, N> bytes_;
};

struct JobIdTag {};
struct TaskIdTag {};
struct ObjectIdTag {};
struct UniqueIdTag {};

/// 4 bytes: a counter kept by the control store.
using JobId = FixedId<4, JobIdTag>;
/// 16 bytes: 12 bytes of hash(parent task id, parent's submission counter), then the job id.
using TaskId = FixedId<16, TaskIdTag>;
/// 20 bytes: the creating task's id, then a 4-byte little-endian index (returns: 1..2^31-1;
/// puts: 2^31 | put counter).
using ObjectId = FixedId<20, ObjectIdTag>;
/// 16 random bytes: worker ids and node ids.
using UniqueId = FixedId<16, UniqueIdTag>;
using WorkerId = UniqueId;
/// An actor is named by the id of the task that created it.
using ActorId = TaskId;
using NodeId = UniqueId;

}  // namespace prism

template <size_t N, typename Tag>
struct std::hash<prism::FixedId<N, Tag>> {
  size_t operator()(const prism::FixedId<N, Tag>& id) const { return id.Hash(); }
};

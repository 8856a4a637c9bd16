// prism::Buffer: bytes that travel without being re-encoded, and that a reader sees in place.
#pragma once

#include <prism/errors.h>
#include <prism/serialization.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace prism {

/// A read-only run of bytes. Put or return one and its bytes are copied once, into the object
/// store (or the message, when small); Get one and it is a view of the stored bytes, in the
/// node's shared-memory store for large objects: no copy, in any process of the node. The view
/// keeps the object pinned in memory while any copy of the Buffer lives.
///
/// Stored bytes start on a 64-byte boundary of the store (16 for small values that travel in
/// messages), so as<T>() can view them as an array of numbers in place.
class Buffer {
 public:
  /// Where a Buffer's bytes are aligned to within an encoded value.
  static constexpr size_t kAlignment = 64;

  Buffer() = default;
  /// A Buffer that owns a copy of `size` bytes at `data`.
  static Buffer Copy(const void* data, size_t size) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(data),
                                                        static_cast<const uint8_t*>(data) + size);
    return Buffer(bytes->data(), bytes->size(), bytes);
  }
  /// A Buffer over memory the caller keeps alive and unchanged while the Buffer is used (for
  /// Put or a task argument, until that call returns).
  static Buffer View(const void* data, size_t size) {
    return Buffer(static_cast<const uint8_t*>(data), size, nullptr);
  }
  /// A Buffer that takes over `bytes`.
  explicit Buffer(std::vector<uint8_t> bytes) {
    auto held = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    data_ = held->data();
    size_ = held->size();
    keep_ = std::move(held);
  }
  /// A Buffer over `data`, alive while `keep` is.
  Buffer(const uint8_t* data, size_t size, std::shared_ptr<const void> keep)
      : data_(data), size_(size), keep_(std::move(keep)) {}

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  const uint8_t* begin() const { return data_; }
  const uint8_t* end() const { return data_ + size_; }
  /// The bytes as an array of T, in place. Throws InvalidArgumentError when the size is not a
  /// multiple of sizeof(T) or the bytes are not aligned for T.
  template <typename T>
  std::span<const T> as() const {
    static_assert(std::is_trivially_copyable_v<T>, "as<T>() views bytes as trivially copyable T");
    if (size_ % sizeof(T) != 0) {
      throw InvalidArgumentError("a Buffer of " + std::to_string(size_) +
                                 " bytes is not a whole number of " + std::to_string(sizeof(T)) +
                                 "-byte elements");
    }
    if (reinterpret_cast<uintptr_t>(data_) % alignof(T) != 0) {
      throw InvalidArgumentError("a Buffer's bytes are not aligned for this element type");
    }
    return {reinterpret_cast<const T*>(data_), size_ / sizeof(T)};
  }
  /// A Buffer over the elements of `v` (the caller keeps them alive, as for View()).
  template <typename T>
  static Buffer ViewOf(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>, "ViewOf views trivially copyable elements");
    return View(v.data(), v.size() * sizeof(T));
  }
  bool operator==(const Buffer& o) const {
    return size_ == o.size_ && (size_ == 0 || std::memcmp(data_, o.data_, size_) == 0);
  }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> keep_;
};

}  // namespace prism

// On the wire a Buffer is a msgpack ext of type 1 ("aligned bytes"): one byte N, N bytes of
// padding, then the bytes, which thereby start on a 64-byte boundary from the start of the
// encoded value. (A msgpack bin or str is read as a Buffer too.)
namespace prism::internal {
inline constexpr int8_t kAlignedBytesExt = 1;
}  // namespace prism::internal

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<prism::Buffer> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o, const prism::Buffer& b) const {
      const auto& cursor = prism::internal::tl_encode_cursor;
      uint8_t pad = 0;
      if (cursor.known()) {
        // ext32 header (6 bytes) and the pad length byte come first.
        size_t body = cursor.offset() + 6 + 1;
        pad = static_cast<uint8_t>((prism::Buffer::kAlignment - body % prism::Buffer::kAlignment) %
                                   prism::Buffer::kAlignment);
      }
      if (b.size() > 0xffffffffu - 256)
        throw prism::InvalidArgumentError("a Buffer must be under 4 GiB");
      uint32_t len = static_cast<uint32_t>(b.size()) + 1 + pad;
      // pack_ext picks the smallest header; force ext32 so the offset math above holds.
      char header[6] = {
          static_cast<char>(0xc9),      static_cast<char>(len >> 24),
          static_cast<char>(len >> 16), static_cast<char>(len >> 8),
          static_cast<char>(len),       static_cast<char>(prism::internal::kAlignedBytesExt)};
      char padding[1 + prism::Buffer::kAlignment] = {};
      padding[0] = static_cast<char>(pad);
      o.pack_ext_body(header, 6);
      o.pack_ext_body(padding, 1 + pad);
      o.pack_ext_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
      return o;
    }
  };
  template <>
  struct convert<prism::Buffer> {
    const msgpack::object& operator()(const msgpack::object& o, prism::Buffer& b) const {
      const char* data;
      size_t size;
      if (o.type == msgpack::type::BIN) {
        data = o.via.bin.ptr;
        size = o.via.bin.size;
      } else if (o.type == msgpack::type::STR) {
        data = o.via.str.ptr;
        size = o.via.str.size;
      } else if (o.type == msgpack::type::EXT &&
                 o.via.ext.type() == prism::internal::kAlignedBytesExt && o.via.ext.size >= 1 &&
                 static_cast<uint8_t>(o.via.ext.data()[0]) + 1u <= o.via.ext.size) {
        size_t skip = 1 + static_cast<uint8_t>(o.via.ext.data()[0]);
        data = o.via.ext.data() + skip;
        size = o.via.ext.size - skip;
      } else {
        throw msgpack::type_error();
      }
      if (prism::internal::tl_decode_source != nullptr) {
        b = prism::Buffer(reinterpret_cast<const uint8_t*>(data), size,
                          *prism::internal::tl_decode_source);
      } else {
        b = prism::Buffer::Copy(data, size);
      }
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

// prism::Buffer: bytes that travel without being re-encoded, and that a reader sees in place.
#pragma once

#include <prism/serialization.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

namespace prism {

/// A read-only run of bytes. Put or return one and its bytes are copied once, into the object
/// store (or the message, when small); Get one and it is a view of the stored bytes, in the
/// node's shared-memory store for large objects: no copy, in any process of the node. The view
/// keeps the object pinned in memory while any copy of the Buffer lives.
class Buffer {
 public:
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
  bool operator==(const Buffer& o) const {
    return size_ == o.size_ && (size_ == 0 || std::memcmp(data_, o.data_, size_) == 0);
  }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> keep_;
};

}  // namespace prism

// On the wire a Buffer is a msgpack bin: other languages read it as bytes.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<prism::Buffer> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o, const prism::Buffer& b) const {
      o.pack_bin(static_cast<uint32_t>(b.size()));
      o.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
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

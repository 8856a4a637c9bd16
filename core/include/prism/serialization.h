// Values travel as msgpack (msgpack-cxx). Any type msgpack-cxx can pack works as an argument or
// a return value: numbers, strings, std containers, and structs with MSGPACK_DEFINE(...).
//
// Encoding is two passes: one measures the exact size, the second writes the bytes straight to
// where they go (a message for small values, the object store for large ones), so a large raw
// body (a prism::Buffer, a std::string) is copied exactly once.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <cxxabi.h>
#include <prism/errors.h>
#include <prism/internal/copy.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

namespace prism::internal {

class RefHandle;
using RefPtr = std::shared_ptr<RefHandle>;

/// Values up to this size travel inline in messages and live in their owner's memory; larger
/// ones go to the node's object store.
inline constexpr size_t kMaxInlineBytes = 100 * 1024;

/// The readable name of a type ("int", "std::vector<int>") for error messages.
inline std::string Demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(mangled);
}
template <typename T>
std::string TypeName() {
  return Demangle(typeid(T).name());
}

/// Refs met while a value is being packed (ObjectRef's pack adaptor adds to it), so that the
/// runtime keeps the objects they name alive as long as the value that contains them.
inline thread_local std::vector<RefPtr>* tl_nested_refs = nullptr;

/// What keeps the bytes being decoded alive (an object store pin, a message). Zero-copy types
/// (prism::Buffer) hold on to it instead of copying.
inline thread_local const std::shared_ptr<const void>* tl_decode_source = nullptr;
/// The zone Unpack builds msgpack's object tree in (reused by a thread's outermost decode).
inline thread_local msgpack::zone tl_decode_zone;
inline thread_local bool tl_decode_zone_in_use = false;

struct CountingStream {
  size_t size = 0;
  void write(const char*, size_t n) { size += n; }
};
/// Thrown when a value encodes to a different size than it measured (it changed while being
/// encoded, or an adaptor is not deterministic): nothing is written past the measured end.
class EncodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PointerStream {
  char* at;
  char* end;
  void write(const char* data, size_t n) {
    if (n > static_cast<size_t>(end - at)) {
      throw EncodeError(
          "a value grew while it was being encoded (it changed, or an adaptor is "
          "not deterministic)");
    }
    CopyBytes(at, data, n);
    at += n;
  }
};

/// Where the encoder is in the value it writes, so that adaptors can align what they write
/// (prism::Buffer aligns its bytes to 64 from the start of the value). Both passes of Encode
/// see the same offsets.
struct EncodeCursor {
  const size_t* count = nullptr;  // counting pass
  char* const* at = nullptr;      // writing pass, with its start
  const char* start = nullptr;
  bool known() const { return count != nullptr || at != nullptr; }
  size_t offset() const { return count != nullptr ? *count : static_cast<size_t>(*at - start); }
};
inline thread_local EncodeCursor tl_encode_cursor;

/// An encoded value, not yet written anywhere: its exact size, how to write it, and the refs
/// inside it. `write` reads the value, so the value must outlive it (`keep` can hold it).
struct EncodedValue {
  size_t size = 0;
  std::function<void(char* dst)> write;
  std::vector<RefPtr> nested;
  std::shared_ptr<const void> keep;

  std::string ToString() const {
    std::string s(size, '\0');
    if (size > 0) write(s.data());
    return s;
  }
};

/// Encodes a value that the caller keeps alive until the result is written.
template <typename T>
EncodedValue Encode(const T& value) {
  EncodedValue out;
  CountingStream counter;
  std::vector<RefPtr>* saved = tl_nested_refs;
  EncodeCursor saved_cursor = tl_encode_cursor;
  tl_nested_refs = &out.nested;
  tl_encode_cursor = EncodeCursor{&counter.size, nullptr, nullptr};
  try {
    msgpack::pack(counter, value);
  } catch (...) {
    tl_nested_refs = saved;
    tl_encode_cursor = saved_cursor;
    throw;
  }
  tl_nested_refs = saved;
  tl_encode_cursor = saved_cursor;
  out.size = counter.size;
  const T* v = &value;
  const size_t size = out.size;
  out.write = [v, size](char* dst) {
    std::vector<RefPtr>* outer = tl_nested_refs;
    EncodeCursor outer_cursor = tl_encode_cursor;
    tl_nested_refs = nullptr;  // counted in the first pass
    PointerStream s{dst, dst + size};
    tl_encode_cursor = EncodeCursor{nullptr, &s.at, dst};
    try {
      msgpack::pack(s, *v);
      if (s.at != s.end) throw EncodeError("a value shrank while it was being encoded");
    } catch (...) {
      tl_nested_refs = outer;
      tl_encode_cursor = outer_cursor;
      throw;
    }
    tl_nested_refs = outer;
    tl_encode_cursor = outer_cursor;
  };
  return out;
}

/// Encodes a value it takes over (for results whose producer returns before they are written).
template <typename T>
EncodedValue EncodeOwned(T&& value) {
  auto held = std::make_shared<std::decay_t<T>>(std::forward<T>(value));
  EncodedValue out = Encode(*held);
  out.keep = std::move(held);
  return out;
}

template <typename T>
std::string Pack(const T& value) {
  return Encode(value).ToString();
}

/// Thrown when bytes cannot be read as the type the reader asked for.
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Decodes in place: string, binary and extension bodies are referenced, not copied, while
/// `source` keeps the bytes alive (prism::Buffer keeps a reference to it).
template <typename T>
T Unpack(std::string_view bytes, const std::shared_ptr<const void>& source = nullptr) {
  const std::shared_ptr<const void>* saved = tl_decode_source;
  tl_decode_source = source ? &source : nullptr;
  // The object tree msgpack builds lives in a zone: the outermost decode of each thread reuses
  // one (its first chunk stays allocated), a decode nested in a conversion gets its own. Bodies
  // are referenced in `bytes` (the zone holds no value after the conversion).
  const bool outermost = !tl_decode_zone_in_use;
  std::optional<msgpack::zone> own_zone;
  msgpack::zone* zone = &tl_decode_zone;
  if (outermost) {
    tl_decode_zone_in_use = true;
  } else {
    zone = &own_zone.emplace();
  }
  auto done = [&] {
    tl_decode_source = saved;
    if (outermost) {
      tl_decode_zone.clear();
      tl_decode_zone_in_use = false;
    }
  };
  try {
    size_t offset = 0;
    msgpack::object obj =
        msgpack::unpack(*zone, bytes.data(), bytes.size(), offset,
                        [](msgpack::type::object_type, size_t, void*) { return true; });
    T out = obj.as<T>();
    done();
    return out;
  } catch (const ObjectLostError&) {  // a device object's producer is gone: said as it is
    done();
    throw;
  } catch (const std::exception& e) {
    done();
    throw DecodeError("cannot read a value of type " + TypeName<T>() + " (" + e.what() + ")");
  }
}

}  // namespace prism::internal

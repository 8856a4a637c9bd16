// Values travel as msgpack (msgpack-cxx). Any type msgpack-cxx can pack works as an argument or
// a return value: numbers, strings, std containers, and structs with MSGPACK_DEFINE(...).
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

#include <prism/errors.h>

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>

namespace prism::internal {

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

template <typename T>
std::string Pack(const T& value) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  return std::string(buf.data(), buf.size());
}

/// Thrown when bytes cannot be read as the type the reader asked for.
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename T>
T Unpack(std::string_view bytes) {
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<T>();
  } catch (const std::exception& e) {
    throw DecodeError("cannot read a value of type " + TypeName<T>() + " (" + e.what() + ")");
  }
}

}  // namespace prism::internal

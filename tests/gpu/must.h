// Status and Result in tests: the value, or the test stops with the error's text (an exception
// gtest reports as the failure).
#pragma once

#include <prism/status.h>

#include <stdexcept>
#include <utility>

namespace prism::testing {

template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  return std::move(r).value();
}
inline void Must(const Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

}  // namespace prism::testing

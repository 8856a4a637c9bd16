// Status and Result<T>: how the runtime reports failure internally, and how GPU tasks, device
// backends and the op library (prism/gpu/) report it. Typed exceptions are the user API's way.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace prism {

enum class StatusCode : uint32_t {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kAlreadyExists = 3,
  kOutOfMemory = 4,
  kUnavailable = 5,
  kTimeout = 6,
  kCancelled = 7,
  kInternal = 8,
  kIOError = 9,
  kPermissionDenied = 10,
  kProtocolError = 11,
  kInfeasible = 12,  // no node of the cluster has (or can have) the resources asked for
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status OK() { return Status(); }
#define PRISM_STATUS_CTOR(Name) \
  static Status Name(std::string m) { return Status(StatusCode::k##Name, std::move(m)); }
  PRISM_STATUS_CTOR(InvalidArgument)
  PRISM_STATUS_CTOR(NotFound)
  PRISM_STATUS_CTOR(AlreadyExists)
  PRISM_STATUS_CTOR(OutOfMemory)
  PRISM_STATUS_CTOR(Unavailable)
  PRISM_STATUS_CTOR(Timeout)
  PRISM_STATUS_CTOR(Cancelled)
  PRISM_STATUS_CTOR(Internal)
  PRISM_STATUS_CTOR(IOError)
  PRISM_STATUS_CTOR(PermissionDenied)
  PRISM_STATUS_CTOR(ProtocolError)
#undef PRISM_STATUS_CTOR

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& value() const& { return std::get<T>(v_); }
  T* operator->() { return &std::get<T>(v_); }
  T& operator*() & { return std::get<T>(v_); }
  T&& operator*() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace prism

#define PRISM_RETURN_IF_ERROR(expr) \
  do {                              \
    ::prism::Status _st = (expr);   \
    if (!_st.ok()) return _st;      \
  } while (0)

#define PRISM_STATUS_CONCAT2(a, b) a##b
#define PRISM_STATUS_CONCAT(a, b) PRISM_STATUS_CONCAT2(a, b)
#define PRISM_ASSIGN_OR_RETURN(lhs, expr)                 \
  auto PRISM_STATUS_CONCAT(_res_, __LINE__) = (expr);     \
  if (!PRISM_STATUS_CONCAT(_res_, __LINE__).ok())         \
    return PRISM_STATUS_CONCAT(_res_, __LINE__).status(); \
  lhs = std::move(PRISM_STATUS_CONCAT(_res_, __LINE__))   \
            .value() /* NOLINT(bugprone-macro-parentheses): lhs may declare */

/// Aborts on a broken invariant of prism's own. Never for anything a peer or user can cause.
#define PRISM_CHECK(cond)                                             \
  do {                                                                \
    if (!(cond)) ::prism::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

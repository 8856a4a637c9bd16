// Shared by the binding's files: how Python values, buffers and options become the core
// worker's, and back. Internal to the binding module.
#pragma once

#include <prism/collective.h>
#include <prism/gpu/tensor.h>
#include <prism/gpu/topology.h>
#include <prism/prism.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "runtime/process_runtime.h"

namespace py = pybind11;

namespace prism::binding {

/// Releases the GIL for its scope, like py::gil_scoped_release, and says the wait to take it
/// back is no blocking of the task that runs (ExcusedWait): on a threaded actor,
/// a thread waiting for the GIL another holds must not earn the actor one more thread, which
/// would only wait for the GIL as well.
class ReleaseGil {
 public:
  ReleaseGil() = default;
  ~ReleaseGil() {
    ExcusedWait excused;
    released_.reset();  // takes the GIL back
  }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  std::optional<py::gil_scoped_release> released_{std::in_place};
};

using internal::RefHandle;
using internal::RefPtr;

// Python buffers an encoded value reads from; released under the GIL whatever thread lets go.
struct PyBuffers {
  std::vector<py::buffer_info> infos;
  ~PyBuffers() {
    if (infos.empty() || !Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    infos.clear();
  }
};

// An encoded value of `size` bytes made of Python buffers placed at offsets (the package lays
// out pickle protocol 5 frames: header, pickle stream, then each out-of-band buffer aligned to
// 64 bytes), written with one copy straight to its destination. Call with the GIL held.
inline internal::EncodedValue PartsValue(size_t size, const py::list& parts,
                                         std::vector<RefPtr> nested) {
  auto buffers = std::make_shared<PyBuffers>();
  std::vector<std::pair<size_t, std::string_view>> at;
  for (const auto& item : parts) {
    auto part = item.cast<py::tuple>();
    size_t offset = part[0].cast<size_t>();
    py::buffer b = part[1].cast<py::buffer>();
    py::buffer_info info = b.request();
    size_t n = static_cast<size_t>(info.size * info.itemsize);
    if (offset > size || n > size - offset)
      throw InvalidArgumentError("a value part lies outside the value");
    at.emplace_back(offset, std::string_view(static_cast<const char*>(info.ptr), n));
    buffers->infos.push_back(std::move(info));
  }
  internal::EncodedValue v;
  v.size = size;
  v.write = [at, size](char* dst) {
    size_t covered = 0;
    for (const auto& [offset, bytes] : at) {
      if (offset > covered) std::memset(dst + covered, 0, offset - covered);  // padding
      internal::CopyBytes(dst + offset, bytes.data(), bytes.size());
      covered = offset + bytes.size();
    }
    if (size > covered) std::memset(dst + covered, 0, size - covered);
  };
  v.nested = std::move(nested);
  v.keep = buffers;
  return v;
}

// How an async method answers once its coroutine finished (on the actor's event loop).
struct Completion {
  ReplyLater later;
  bool done = false;
  void Finish(std::function<ReturnValues()> produce) {
    if (done) throw InvalidArgumentError("this call was answered already");
    done = true;
    ReleaseGil release;
    later(std::move(produce));
  }
};

// Tokens of refs that became ready (prism.ObjectRef.future): the core's callbacks push them
// here without the GIL, and one Python thread takes them (the GIL is never taken on the core's
// event loop, which a thread holding the GIL may be waiting on).
template <typename Token>
class TokenQueue {
 public:
  void Push(Token token) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.push_back(token);
    }
    cv_.notify_one();
  }
  std::vector<Token> Take() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !tokens_.empty(); });
    std::vector<Token> out(tokens_.begin(), tokens_.end());
    tokens_.clear();
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Token> tokens_;
};

// (Never destroyed: a waiting thread may outlive the module.)
inline TokenQueue<uint64_t>& Ready() {
  static auto* queue = new TokenQueue<uint64_t>();
  return *queue;
}
// Calls of this actor process that their callers cancelled (hex task ids), for the thread that
// cancels them on the actor's event loop.
inline TokenQueue<std::string>& Cancelled() {
  static auto* queue = new TokenQueue<std::string>();
  return *queue;
}

// Bytes that stay where they are (in the object store, or a message) while Python reads them.
struct Pinned {
  std::string_view bytes;
  std::shared_ptr<const void> keep;
};

inline std::vector<RefPtr> Handles(const py::list& nested) {
  std::vector<RefPtr> out;
  out.reserve(nested.size());
  for (const auto& h : nested) out.push_back(h.cast<RefPtr>());
  return out;
}

// A task's results from Python: a list of (size, parts, nested handles), one per return object.
inline ReturnValues ValuesFrom(const py::list& values) {
  ReturnValues out;
  out.reserve(values.size());
  for (const auto& v : values) {
    auto t = v.cast<py::tuple>();
    out.push_back(
        PartsValue(t[0].cast<size_t>(), t[1].cast<py::list>(), Handles(t[2].cast<py::list>())));
  }
  return out;
}

inline std::vector<const RefHandle*> Raw(const std::vector<RefPtr>& refs) {
  std::vector<const RefHandle*> raw;
  raw.reserve(refs.size());
  for (const auto& r : refs) {
    if (!r) throw InvalidArgumentError("an empty ObjectRef");
    raw.push_back(r.get());
  }
  return raw;
}

}  // namespace prism::binding

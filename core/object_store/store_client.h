// A process's handle on its node's object store: a synchronous connection to the daemon for
// the table (create, seal, get, release, delete) and the arena mapped into this process, so
// object bytes are written and read in place. Thread-safe.
#pragma once

#include "base/thread_annotations.h"

#include "base/status.h"
#include "rpc/blocking_client.h"

#include <prism/ids.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace prism {

class StoreClient {
 public:
  /// Opens the store of the daemon at `daemon_socket`: handshake, the arena's memfd, mmap.
  static Result<std::unique_ptr<StoreClient>> Connect(const std::string& daemon_socket,
                                                      const std::string& token, const WorkerId& self);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  uint8_t* base() const { return base_; }
  uint64_t capacity() const { return capacity_; }
  /// Whether [p, p + n) lies inside this process's mapping of the arena.
  bool Contains(const void* p, uint64_t n = 1) const {
    auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(base_);
    return a >= b && a + n <= b + capacity_;
  }

  /// Allocates `size` bytes for `id` (pinned by this client) and returns where to write them.
  Result<uint8_t*> Create(const ObjectId& id, uint64_t size, const WorkerId& owner);
  Status Seal(const ObjectId& id);
  Status Abort(const ObjectId& id);
  struct View {
    Status status;  // OK: pinned; release it with Release(id)
    const uint8_t* data = nullptr;
    uint64_t size = 0;
  };
  /// Pins and locates sealed objects, in order.
  std::vector<View> Get(const std::vector<ObjectId>& ids);
  /// Unpins once (one-way; the daemon answers only errors, which are logged).
  void Release(const ObjectId& id);
  /// The owner frees objects (one-way).
  void Delete(const std::vector<ObjectId>& ids);
  /// Breaks the connection (tests: what a crash does).
  void Disconnect();

 private:
  StoreClient() = default;
  Result<rpc::Envelope> Call(const rpc::Envelope& req, uint64_t request_id) PRISM_REQUIRES(mu_);
  void SendOneWay(const rpc::Envelope& req) PRISM_REQUIRES(mu_);
  void LogError(const rpc::ErrorReply& e);

  uint8_t* base_ = nullptr;
  uint64_t capacity_ = 0;
  std::mutex mu_;
  rpc::BlockingClient conn_ PRISM_GUARDED_BY(mu_);
  uint64_t next_request_id_ PRISM_GUARDED_BY(mu_) = 1;
  bool broken_ PRISM_GUARDED_BY(mu_) = false;
};

}  // namespace prism

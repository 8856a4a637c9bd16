// A process's handle on its node's object store: a synchronous connection to the daemon for
// the table (create, seal, get, release, delete) and the arena mapped into this process, so
// object bytes are written and read in place. Thread-safe.
//
// The client holds one store pin per object it reads, for as long as readers use it and
// `idle_hold` after the last lets go: a get of an object held already is a lookup here, not a
// round trip to the daemon (reading a large object again and again costs what a map lookup
// does). Pins idle longer than `idle_hold` go back to the daemon (so the object can be spilled
// or freed), from a thread that runs only while such pins exist.
#pragma once

#include <prism/ids.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "rpc/blocking_client.h"

namespace prism {

class StoreClient {
 public:
  /// Opens the store of the daemon at `daemon_socket`: handshake, the arena's memfd, mmap.
  static Result<std::unique_ptr<StoreClient>> Connect(
      const std::string& daemon_socket, const std::string& token, const WorkerId& self,
      std::chrono::milliseconds idle_hold = std::chrono::milliseconds(100));
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
  /// Pins and locates sealed objects, in order (asking the daemon only for those not held).
  std::vector<View> Get(const std::vector<ObjectId>& ids);
  /// One reader of a Get's view lets go; the pin stays `idle_hold` after the last.
  void Release(const ObjectId& id);
  /// The owner frees objects (one-way); idle pins on them go first.
  void Delete(const std::vector<ObjectId>& ids);
  /// Gives every idle pin back now (tests, and before a put that finds the store full).
  void ReleaseIdle();
  /// Objects this client holds a store pin on (tests).
  size_t held() const;
  /// Breaks the connection (tests: what a crash does).
  void Disconnect();

 private:
  StoreClient() = default;
  /// Sends a request and waits for its answer (without mu_: other threads go on meanwhile).
  Result<rpc::Envelope> Call(const rpc::Envelope& req, uint64_t request_id);
  void SendOneWay(const rpc::Envelope& req);
  /// One StoreRelease (one-way) for `ids`; nothing when there are none.
  void SendRelease(const std::vector<ObjectId>& ids);
  void LogError(const rpc::ErrorReply& e);
  /// Sends Release for the idle pins idle since `before` or earlier (all: time_point::max()).
  void ReleaseIdleLocked(std::chrono::steady_clock::time_point before) PRISM_REQUIRES(mu_);
  void Sweep();  // the sweeper thread

  struct Held {
    const uint8_t* data = nullptr;
    uint64_t size = 0;
    uint32_t readers = 0;
    std::chrono::steady_clock::time_point idle_since;  // readers fell to 0
  };

  uint8_t* base_ = nullptr;
  uint64_t capacity_ = 0;
  std::chrono::milliseconds idle_hold_{100};
  mutable Mutex mu_;          // the held table
  Mutex send_mu_;             // one sender at a time on conn_
  rpc::BlockingClient conn_;  // sent on under send_mu_, read by one waiting caller at a time
  std::atomic<uint64_t> next_request_id_{1};
  std::atomic<bool> broken_{false};
  Mutex reply_mu_;
  std::condition_variable reply_cv_;
  bool reading_ PRISM_GUARDED_BY(reply_mu_) = false;  // a caller is reading the next frame
  std::set<uint64_t> awaiting_ PRISM_GUARDED_BY(reply_mu_);
  std::map<uint64_t, Result<rpc::Envelope>> replies_ PRISM_GUARDED_BY(reply_mu_);
  std::unordered_map<ObjectId, Held> held_ PRISM_GUARDED_BY(mu_);
  size_t idle_ PRISM_GUARDED_BY(mu_) = 0;  // held_ entries with no reader
  bool stopping_ PRISM_GUARDED_BY(mu_) = false;
  std::condition_variable sweep_cv_;
  // The sweeper waits without a timeout (no idle pins): the next idle pin must wake it. Otherwise
  // it looks on its own within half the hold, so a get and release of one object, which makes a
  // pin idle each time, costs no wake-up of the sweeper (it had cost a fifth of a large get).
  bool sweeper_asleep_ PRISM_GUARDED_BY(mu_) = false;
  std::thread sweeper_;  // started with the first idle pin
};

}  // namespace prism

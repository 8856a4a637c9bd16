// The client side of the owner-to-owner protocol: this process's connections to the core
// workers that own objects it borrows (or produced device objects it imports), the fetches of
// borrowed values, borrow registrations and releases batched per owner, and device-object
// imports. (Ray splits this between its CoreWorkerClientPool and the borrower's half of its
// ReferenceCounter.) The owner's side of the same messages stays with the core worker.
#pragma once

#include <prism/internal/runtime_api.h>

#include <asio.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/ids.h"
#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "worker/memory_store.h"

namespace prism {

class OwnerClients {
 public:
  struct Config {
    std::string token;  // the session's, sent in each Hello
    size_t max_frame_bytes = rpc::kDefaultMaxFrameBytes;
    WorkerId self;  // this process: the borrower its own registrations and releases name
    /// How long WaitForRegistrations waits before it gives up (and warns).
    std::chrono::milliseconds registration_wait{std::chrono::seconds(30)};
    /// How long ImportDeviceObject waits for the producer's answer.
    std::chrono::milliseconds import_wait{std::chrono::seconds(30)};
  };
  /// `undo_registration`: an owner answered that this process's registration of `id` found the
  /// object gone (the event loop calls it).
  OwnerClients(asio::io_context& io, Config config,
               std::function<void(const ObjectId&)> undo_registration);
  ~OwnerClients();
  OwnerClients(const OwnerClients&) = delete;
  OwnerClients& operator=(const OwnerClients&) = delete;

  /// Event loop: asks `owner` for the value of `id`; `done` runs on the loop with the value, where
  /// it lies in the node's store, or an error (the owner's, or ERROR_OWNER_DIED when the owner
  /// is gone or unreachable).
  void Fetch(const ObjectId& id, const internal::OwnerAddress& owner, MemoryStore::Callback done);
  /// Any thread: sends `env` to the core worker at `to` from the event loop (connecting first if
  /// needed; dropped if it cannot be reached).
  void Post(const internal::OwnerAddress& to, rpc::Envelope env);

  // Borrow registrations. Registrations (AddBorrowers) go out in one batch per owner and
  // borrower each time the loop flushes; while any is unanswered, releases (RemoveBorrowers) wait,
  // so no owner frees an object that a registration on its way still needs.
  /// Any thread: registers `borrower` (this process, or the caller of a task whose result lends it
  /// the object) as a borrower of `id` at its owner.
  void QueueAddBorrower(const internal::OwnerAddress& owner, const ObjectId& id,
                        const WorkerId& borrower);
  /// Any thread: this process lets go of `count` registrations of `id` at its owner.
  void QueueRelease(const internal::OwnerAddress& owner, const ObjectId& id, uint32_t count);
  /// Blocks until every registration queued so far is answered (or the wait gives up, with a
  /// warning): a task's reply that lends objects goes only after that.
  void WaitForRegistrations();
  /// Registrations queued or sent, not answered yet (tests).
  int pending_registrations() const;

  /// Any thread: a caller that pushes tasks to this process, on `conn`. Releases of objects
  /// that caller owns go on that connection, behind the task replies that may carry them.
  void RecordCaller(const std::string& worker_id, const std::shared_ptr<rpc::Connection>& conn);

  // Device objects (they stay in the process that made them; see gpu_tasks.h).
  /// Any thread but the loop: counts an import of device object `id` at `producer` and blocks
  /// until it answers: the memory's export handle, or nothing when the producer no longer has
  /// it, is gone, or does not answer within the import wait.
  std::optional<std::string> ImportDeviceObject(const internal::OwnerAddress& producer,
                                                const std::string& id,
                                                const std::string& transfer_group);
  /// Any thread: the import of `id` ended.
  void ReleaseDeviceImport(const internal::OwnerAddress& producer, const std::string& id);
  /// Any thread: the result `id`, whose device objects `producer` keeps, went: it may free them.
  void ReleaseDeviceResult(const ObjectId& id, const internal::OwnerAddress& producer);

  /// Event loop: closes every connection (shutdown).
  void CloseAll();

 private:
  struct Owner;
  // What goes to one owner at the next flush.
  struct Batch {
    internal::OwnerAddress owner;
    std::map<WorkerId, std::vector<ObjectId>> adds;      // by borrower
    std::vector<std::pair<ObjectId, uint32_t>> removes;  // this process's releases
  };
  /// The connection to `owner` (event loop only), connecting without blocking the loop if
  /// there is none; frames sent meanwhile wait for the handshake.
  Owner* Connection(const internal::OwnerAddress& owner);
  void OnMessage(Owner* o, rpc::Envelope& m);
  /// The owner is unreachable or its connection closed: fails what waits on it.
  void Lost(Owner* o, const Status& why);
  void PostFlush();
  void Flush();
  void RegistrationsAnswered(int n);

  asio::io_context& io_;
  const Config config_;
  const std::function<void(const ObjectId&)> undo_registration_;

  // Event loop only.
  // By "<node address>|<socket path>".
  std::unordered_map<std::string, std::unique_ptr<Owner>> owners_;
  uint64_t next_request_id_ = 1;

  mutable Mutex callers_mu_;
  std::unordered_map<std::string, std::weak_ptr<rpc::Connection>> callers_
      PRISM_GUARDED_BY(callers_mu_);

  mutable Mutex borrow_mu_;
  std::condition_variable borrow_cv_;
  int pending_adds_ PRISM_GUARDED_BY(borrow_mu_) = 0;  // registrations sent or queued, unanswered
  std::map<std::string, Batch> out_ PRISM_GUARDED_BY(borrow_mu_);  // by owner socket
  bool flush_posted_ PRISM_GUARDED_BY(borrow_mu_) = false;
};

}  // namespace prism

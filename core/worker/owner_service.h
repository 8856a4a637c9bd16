// The owner's side of the owner-to-owner protocol: what this process answers when other core
// workers fetch its objects, register or release borrows of them, or import device objects it
// produced. (The client side of the same messages is OwnerClients.) Event loop only.
#pragma once

#include <unordered_set>

#include "base/ids.h"
#include "prism.pb.h"
#include "rpc/connection.h"
#include "worker/gpu_tasks.h"
#include "worker/memory_store.h"

namespace prism {

class OwnerService {
 public:
  /// `store`: this process's objects and their borrowers; `gpu`: the device objects it holds.
  OwnerService(MemoryStore& store, GpuTasks& gpu) : store_(store), gpu_(gpu) {}

  /// Handles `msg` from another core worker if it is a request of this protocol (answered on
  /// `conn`, where it asks for an answer); false for any other message.
  bool Handle(rpc::Connection& conn, const rpc::Envelope& msg);
  /// A borrower let go of borrows (also sent on a lease connection, behind its task replies).
  void RemoveBorrowers(const rpc::RemoveBorrowers& req);
  /// The daemon reported `worker` dead: its borrows and imports end, and registrations or
  /// imports from it still on their way are refused (their releases would never come).
  void WorkerDied(const WorkerId& worker);

 private:
  void GetObject(rpc::Connection& conn, const rpc::GetObjectRequest& req);
  void AddBorrowers(rpc::Connection& conn, const rpc::AddBorrowers& req);
  void ImportDeviceObject(rpc::Connection& conn, const rpc::ImportDeviceObject& req);
  void ReleaseDeviceObjects(const rpc::ReleaseDeviceObjects& req);
  bool Dead(const std::string& worker) const;

  MemoryStore& store_;
  GpuTasks& gpu_;
  std::unordered_set<WorkerId> dead_;  // workers and drivers the daemon reported dead
};

}  // namespace prism

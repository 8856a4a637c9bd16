// Writes a finished task's results for its caller: small values inline in the reply, large ones
// into the node's store (owned by the caller), and the refs inside them lent to the caller
// (registered as its borrows where another process owns them). Any thread.
#pragma once

#include <prism/internal/runtime_api.h>

#include <stdexcept>
#include <vector>

#include "object_store/store_client.h"
#include "prism.pb.h"
#include "runtime/process_runtime.h"
#include "worker/memory_store.h"
#include "worker/object_access.h"
#include "worker/owner_clients.h"

namespace prism {

/// A result could not be written (not the function's fault: the runtime's, or a result the
/// runtime cannot keep).
class StoreWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ResultWriter {
 public:
  ResultWriter(ObjectAccess& objects, StoreClient& host_store, MemoryStore& store,
               OwnerClients& owners)
      : objects_(objects), host_store_(host_store), store_(store), owners_(owners) {}

  /// Writes result `out` of object `id` for `caller` into `ret`: inline, or into the store. Throws
  /// ObjectStoreFullError when it finds no room, StoreWriteError when the store fails otherwise.
  void Store(const ObjectId& id, const internal::EncodedValue& out, const WorkerId& caller,
             rpc::ReturnObject* ret);
  /// Writes a finished task's results into `reply`, one return object each; throws as Store does,
  /// and StoreWriteError when their count is not the spec's. Nothing is left in the store after a
  /// throw.
  void StoreAll(const rpc::TaskSpec& spec, const ReturnValues& out, rpc::TaskReply& reply);
  /// Deletes from the node's store the results of `reply` written there (a task that failed
  /// after writing some of them: its caller hears of the failure only).
  void DropStored(const rpc::TaskReply& reply);

 private:
  /// The caller of a finished task gets the refs inside its result: registered as their
  /// borrower where another process owns them.
  void LendNested(const std::vector<internal::RefPtr>& nested, const WorkerId& caller,
                  rpc::ReturnObject* ret);

  ObjectAccess& objects_;
  StoreClient& host_store_;
  MemoryStore& store_;
  OwnerClients& owners_;
};

}  // namespace prism

// The node's object store as a service: the store requests of the core workers connected to
// the daemon (create, seal, abort, get, release, delete), checked and answered on their
// connections. Part of the node manager; the store itself is object_store/.
#pragma once

#include <cstdint>
#include <functional>

#include "base/ids.h"
#include "base/status.h"
#include "object_store/object_store.h"
#include "prism.pb.h"
#include "rpc/connection.h"

namespace prism {

/// On the daemon's event loop, like the store it serves.
class StoreService {
 public:
  /// `is_alive(owner)`: whether an object's owner is a live driver or worker of this node (an
  /// object created for anyone else could never be freed).
  StoreService(ObjectStore& store, std::function<bool(const WorkerId&)> is_alive);
  /// Handles one store request (kStoreCreate .. kStoreDelete) from `client`'s connection. It is
  /// answered there: at once, or once the store has room (a create) or the objects back from
  /// disk (a get); releases and deletes only when they fail.
  void Handle(rpc::Connection& conn, ObjectStore::ClientId client, rpc::Envelope& msg);
  /// The store's figures, for the node's status (`spill_dir`: where it spills).
  void Report(rpc::StoreStats* out, const std::string& spill_dir) const;

 private:
  ObjectStore& store_;
  std::function<bool(const WorkerId&)> is_alive_;
};

}  // namespace prism

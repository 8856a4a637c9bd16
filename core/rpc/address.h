// A core worker's address in its two forms: on the wire (rpc::Address) and as the runtime passes
// it around (internal::OwnerAddress: an object's owner, a task's caller, a device object's
// producer, an actor's process). Every copy between them goes through these two functions.
#pragma once

#include <prism/internal/runtime_api.h>

#include "prism.pb.h"

namespace prism::rpc {

inline internal::OwnerAddress FromWire(const Address& a) {
  return internal::OwnerAddress{a.socket_path(), a.worker_id(), a.node_id(), a.node_address()};
}

inline void ToWire(const internal::OwnerAddress& a, Address* out) {
  out->set_socket_path(a.socket_path);
  out->set_worker_id(a.worker_id);
  out->set_node_id(a.node_id);
  out->set_node_address(a.node_address);
}

}  // namespace prism::rpc

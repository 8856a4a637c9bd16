// The control service's key-value table: (namespace, key) -> value. Python drivers export their
// functions through it, and collective groups meet there (rendezvous data).
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <utility>

#include "base/status.h"
#include "prism.pb.h"

namespace prism {

/// On the daemon's event loop.
class KvTable {
 public:
  /// Applies a get, a put (which keeps an existing value unless `overwrite`) or a delete. The
  /// reply says whether the key was there before, and a get's value; an unknown operation is an
  /// InvalidArgument error and changes nothing.
  Result<rpc::KvReply> Apply(const rpc::KvRequest& req);
  size_t size() const { return table_.size(); }

 private:
  std::map<std::pair<std::string, std::string>, std::string> table_;
};

}  // namespace prism

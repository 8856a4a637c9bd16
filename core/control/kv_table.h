// The control service's key-value table: (namespace, key) -> value. Python drivers export their
// functions through it, and collective groups meet there (rendezvous data).
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <utility>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "prism.pb.h"

namespace prism {

/// The key-value table as a node reaches it: in-process on the head (KvTable), over gRPC
/// elsewhere (RemoteControl). Blocking; any thread.
class KvStore {
 public:
  virtual ~KvStore() = default;
  /// Applies a get, a put (which keeps an existing value unless `overwrite`) or a delete. The
  /// reply says whether the key was there before, and a get's value; an unknown operation is an
  /// InvalidArgument error and changes nothing.
  virtual Result<rpc::KvReply> Apply(const rpc::KvRequest& req) = 0;
};

/// The head's table. Any thread (its own mutex): the head's event loop and gRPC's threads.
class KvTable final : public KvStore {
 public:
  Result<rpc::KvReply> Apply(const rpc::KvRequest& req) override;
  size_t size() const {
    MutexLock lock(mu_);
    return table_.size();
  }

 private:
  mutable Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::string> table_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism

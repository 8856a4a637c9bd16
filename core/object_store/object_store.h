// The node's host object store: one memfd-backed arena that every local process maps, so a
// sealed object is read in place by any of them. The daemon keeps the table (who created what,
// who pins what, who owns what) and spills unpinned objects to disk when the arena is full.
// Single-threaded: the daemon's event loop calls it. Spilling and restoring do their disk I/O
// elsewhere (ObjectStoreConfig::run_io): a create that needs room, or a read of a spilled object,
// is answered once that I/O is done, and every other request is answered meanwhile.
#pragma once

#include <prism/ids.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "object_store/allocator.h"

namespace prism {

struct ObjectStoreConfig {
  uint64_t capacity = 0;  // bytes
  std::string spill_dir;  // created on first spill; removed when empty at shutdown
  /// Allocate every page of the arena at start (fallocate), so that no put waits for the kernel
  /// to find and zero fresh pages; the memory is taken for good. Off by default.
  bool prefault = false;
  /// Runs a spill's or a restore's disk I/O (`io`) off the caller's thread, then `then` back on
  /// it. Unset: both run at once, inline (tests of the table alone).
  std::function<void(std::function<void()> io, std::function<void()> then)> run_io;
};

struct StoreTableStats {
  uint64_t capacity = 0;
  uint64_t used = 0;     // bytes allocated in the arena
  uint64_t pinned = 0;   // bytes of objects being written or held by a reader
  uint64_t spilled = 0;  // bytes in spill files
  uint64_t num_objects = 0;
  uint64_t num_spilled = 0;
  uint64_t spills_total = 0;
  uint64_t restores_total = 0;
};

/// The default arena size: 30% of the machine's memory, or of the cgroup's memory limit when
/// that is lower (as Ray), at least 64 MiB. Only pages that objects touch take memory.
uint64_t DefaultObjectStoreCapacity();

class ObjectStore {
 public:
  /// A store client: one connection to the daemon. Pins are counted per client so that a client
  /// that goes away releases everything it held.
  using ClientId = uint64_t;
  struct Located {
    uint64_t offset = 0;
    uint64_t size = 0;
  };

  using Done = std::function<void(Result<Located>)>;

  static Result<std::unique_ptr<ObjectStore>> Open(ObjectStoreConfig config);
  ~ObjectStore();

  /// The arena's memfd (handed to clients) and size.
  int fd() const { return fd_; }
  uint64_t capacity() const { return alloc_.capacity(); }

  /// Allocates an object; the client holds one pin and is its writer until Seal. Spills
  /// unpinned objects to make room. Errors: AlreadyExists, OutOfMemory (larger than the store,
  /// or everything is pinned), InvalidArgument.
  Result<Located> Create(ClientId client, const ObjectId& id, uint64_t size, const WorkerId& owner);
  /// The same, answering through `done`: at once when the object fits, else once spills made
  /// room (or could not). Requests that wait for room are served in order.
  void CreateAsync(ClientId client, const ObjectId& id, uint64_t size, const WorkerId& owner,
                   Done done);
  /// Errors: NotFound; InvalidArgument when sealed already; PermissionDenied when another
  /// client created it.
  Status Seal(ClientId client, const ObjectId& id);
  /// Drops an object this client created and has not sealed.
  Status Abort(ClientId client, const ObjectId& id);
  /// Pins a sealed object for `client`, restoring it from disk if it was spilled.
  Result<Located> Get(ClientId client, const ObjectId& id);
  /// The same through `done`: at once for an object in memory; for a spilled one once it is
  /// restored (which waits for room while the arena is full of pinned objects).
  void GetAsync(ClientId client, const ObjectId& id, Done done);
  /// Errors: NotFound when the client holds no pin on `id` (e.g. released twice).
  Status Release(ClientId client, const ObjectId& id);
  /// The owner frees the object: now, or when its last pin goes. Unknown ids are ignored.
  void Delete(const ObjectId& id);
  /// The client's connection closed: its pins go, its unsealed objects are dropped, and what it
  /// waited for is not answered.
  void ClientGone(ClientId client);
  /// The worker ended: the objects it owned can no longer be reached, so they go.
  void OwnerGone(const WorkerId& owner);

  bool Contains(const ObjectId& id) const { return objects_.count(id) > 0; }
  StoreTableStats stats() const;
  /// Removes every spill file (shutdown).
  void RemoveSpillFiles();

 private:
  struct Object {
    uint64_t size = 0;
    uint64_t offset = 0;
    bool in_memory = false;
    bool sealed = false;
    bool spill_file = false;  // a copy is on disk
    bool deleted = false;     // the owner let go; freed with the last pin
    bool spilling = false;    // its copy to disk is being written (the store pins it meanwhile)
    bool restoring = false;   // waits for room, or is being read back
    uint64_t generation = 0;  // tells this entry from a later one of the same id
    ClientId creator = 0;
    WorkerId owner;
    uint64_t last_use = 0;
    std::map<ClientId, uint32_t> pins;
    uint32_t total_pins = 0;
    std::chrono::steady_clock::time_point spill_failed;  // not tried again for a while
    std::vector<std::pair<ClientId, Done>> readers;      // waiting for its restore
  };
  // A request waiting for room: a create (`restore` false) or a spilled object's restore.
  struct Waiting {
    ObjectId id;
    uint64_t size = 0;
    bool restore = false;
    ClientId client = 0;      // a create's client
    Done done;                // a create's answer (a restore answers its object's readers)
    uint64_t generation = 0;  // of the object's entry when it began waiting
  };
  ObjectStore(ObjectStoreConfig config, int fd, uint8_t* base);
  /// Serves the requests waiting for room, in order, starting spills as needed.
  void Pump();
  /// Starts writing unpinned objects to disk, least recently used first, until `needed` bytes
  /// will be free; false when nothing can be started.
  bool StartSpills(uint64_t needed);
  void OnSpilled(const ObjectId& id, const Status& st);
  void StartRestore(const ObjectId& id, uint64_t offset);
  void OnRestored(const ObjectId& id, uint64_t generation, uint64_t offset, const Status& st);
  void RunIo(std::function<void()> io, std::function<void()> then);
  Status FullError(uint64_t size, const ObjectId& for_id) const;
  Result<Located> PinLocated(ClientId client, const ObjectId& id, Object& o);
  std::string SpillPath(const ObjectId& id) const;
  void Unpin(const ObjectId& id, Object& o, ClientId client, uint32_t n);
  void MaybeFree(std::unordered_map<ObjectId, Object>::iterator it);

  ObjectStoreConfig config_;
  int fd_;
  uint8_t* base_;
  ArenaAllocator alloc_;
  std::unordered_map<ObjectId, Object> objects_;
  std::unordered_map<ClientId, std::unordered_map<ObjectId, uint32_t>> client_pins_;
  uint64_t clock_ = 0;
  uint64_t spills_total_ = 0;
  uint64_t restores_total_ = 0;
  std::deque<Waiting> waiting_;
  uint64_t waiting_bytes_ = 0;   // what the requests in waiting_ need
  uint64_t spilling_bytes_ = 0;  // blocks that spills in flight will free
  uint64_t generations_ = 0;
  Status last_spill_error_;
  bool pumping_ = false;
  bool pump_again_ = false;
};

}  // namespace prism

// Between the group registry (group.cc) and the backends (gloo_group.cc).
#pragma once

#include <prism/collective.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace gloo {
class Context;
}

namespace prism::collective::internal {

// The control store's namespace for groups: "group/<name>" holds a declaration; a generation's
// rendezvous keys live under "<name>/<generation>/".
inline constexpr const char* kNamespace = "prism.collective";

// Key-value access to the control store (the core worker's connection), with waits.
void KvSet(const std::string& key, const std::string& value);
bool KvPutIfAbsent(const std::string& key, const std::string& value);
std::optional<std::string> KvGet(const std::string& key);
void KvDelete(const std::string& key);
// Waits until every key exists; false when `timeout` passed first.
bool KvWait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);

// Publishes `value` as `index`'s under `prefix` (keys <prefix><i>) and waits for every one of
// `size`: their values, or nothing when some did not come in time (`missing` names them).
std::optional<std::vector<std::string>> KvExchange(const std::string& prefix, int index, int size,
                                                   const std::string& value,
                                                   std::chrono::milliseconds timeout,
                                                   std::string* missing);

// What a rank needs to join: the group, its generation (a fresh one each time it is created), and
// where the rendezvous keys go.
struct JoinInfo {
  std::string name;
  std::string generation;
  int rank = 0;
  int size = 0;
  Backend backend = Backend::kGloo;
  std::chrono::milliseconds timeout{30000};
  std::vector<int> pids;    // each rank's process, once all joined (to name a dead one)
  int device = 0;           // nccl: this process's CUDA device for the communicator
  bool environment = true;  // sets RANK, WORLD_SIZE, ... (not for prism's own pair groups)
  std::string prefix() const { return name + "/" + generation + "/"; }
};

// Whether group `name` is declared now under a generation other than `generation`.
bool Recreated(const std::string& name, const std::string& generation);

// Publishes this rank's process and waits for every rank's (fills info.pids). Throws
// CollectiveError naming the ranks that did not join in time.
void Rendezvous(JoinInfo& info);
// A failure's cause put in words: the ranks that are gone (base/process_info.h's ProcessGone), or
// a timeout on live ones.
// `seq` > 0: the group's collective operation of that number (every rank counts the same), for
// naming a live rank that did not take part in it.
std::string Diagnose(const JoinInfo& info, const char* op, const std::string& what,
                     uint64_t seq = 0);

// Connects this rank to the others through the control store (gloo's TCP transport on loopback).
// Throws CollectiveError naming the ranks that did not join in time.
std::unique_ptr<Group> JoinGloo(const JoinInfo& info);

// A gloo group's context (for the benchmark's raw Gloo calls on the same connections); null for
// groups of other backends.
std::shared_ptr<gloo::Context> GlooContextOf(Group& group);

// The dtype's size, and whether an operation takes it: reductions take float16, bfloat16,
// float32, float64, int32 and int64; operations that only move data take uint8 too.
size_t ElementSize(DType dtype);
void CheckDType(DType dtype, bool reduces = true);
// Whether operation `op` (its name) reduces; whether it is a collective one (every rank takes part:
// not send, recv or a batch of them), which the ranks number alike (Diagnose's `seq`).
bool Reduces(const char* op);
bool IsCollective(const char* op);

// InitGroup for prism's own groups: the communicator on CUDA device `device`; `environment`:
// whether joining sets the torch.distributed variables.
Group& InitGroupOn(const std::string& name, int world_size, int rank, Backend backend,
                   GroupOptions options, int device, bool environment);

}  // namespace prism::collective::internal

// Groups: their declarations in the control store, this process's memberships, joining (with the
// torch.distributed environment), destroying.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <prism/gpu/topology.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "base/ids.h"
#include "base/mutex.h"
#include "base/process_info.h"
#include "collectives/internal.h"
#include "runtime/process_runtime.h"

namespace prism::collective {

const char* BackendName(Backend backend) { return backend == Backend::kGloo ? "gloo" : "nccl"; }

namespace internal {
namespace {

std::shared_ptr<ProcessRuntime> Core() {
  auto core = CurrentRuntime();
  if (!core) throw InvalidArgumentError("prism is not initialized: call prism::Init() first");
  return core;
}

// A declaration: "v2;<backend>;<size>;<timeout ms>;<generation>;<order>;<member actor hex>,..."
// (members empty for a group its ranks declare themselves, InitGroup; order "given" or
// "topology"). v1 lacked the order.
struct Declaration {
  Backend backend = Backend::kGloo;
  int size = 0;
  std::chrono::milliseconds timeout{30000};
  std::string generation;
  RankOrder order = RankOrder::kAsGiven;
  std::vector<std::string> members;

  std::string Encode() const {
    std::string out = "v2;" + std::string(BackendName(backend)) + ";" + std::to_string(size) + ";" +
                      std::to_string(timeout.count()) + ";" + generation + ";" +
                      (order == RankOrder::kTopology ? "topology" : "given") + ";";
    for (size_t i = 0; i < members.size(); ++i) out += (i ? "," : "") + members[i];
    return out;
  }
  static Declaration Decode(const std::string& name, const std::string& text) {
    std::vector<std::string> f;
    std::stringstream in(text);
    for (std::string part; std::getline(in, part, ';');) f.push_back(part);
    if (text.size() && text.back() == ';') f.push_back("");
    bool v1 = f.size() == 6 && f[0] == "v1", v2 = f.size() == 7 && f[0] == "v2";
    if (!v1 && !v2)
      throw RuntimeError("collective group '" + name +
                         "' has a declaration this version cannot read");
    Declaration d;
    if (v2) {
      d.order = f[5] == "topology" ? RankOrder::kTopology : RankOrder::kAsGiven;
      f.erase(f.begin() + 5);
    }
    d.backend = f[1] == "nccl" ? Backend::kNccl : Backend::kGloo;
    d.size = std::stoi(f[2]);
    d.timeout = std::chrono::milliseconds(std::stoll(f[3]));
    d.generation = f[4];
    std::stringstream m(f[5]);
    for (std::string id; std::getline(m, id, ',');) d.members.push_back(id);
    return d;
  }
};

std::string GroupKey(const std::string& name) { return "group/" + name; }

// The rank of the member declared `index` when ranks follow the GPU topology: every member
// publishes its GPU; the ring over them (topology.h's RingOrder, starting with member 0's) is
// the rank order. The declared order stands where a member holds no GPU of its own or no
// topology is known.
int TopologyRank(const std::string& name, const Declaration& d, int index) {
  std::vector<int> mine = GetGpuIds();
  std::string missing;
  auto published =
      KvExchange(name + "/" + d.generation + "/gpu/", index, d.size,
                 mine.empty() ? "-1" : std::to_string(mine.front()), d.timeout, &missing);
  if (!published) {
    throw CollectiveError("collective group '" + name + "': the actor(s) declared " + missing +
                          " did not join within " + std::to_string(d.timeout.count()) + " ms");
  }
  std::vector<int> gpus;
  for (const std::string& gpu : *published) gpus.push_back(std::atoi(gpu.c_str()));
  std::vector<int> sorted = gpus;
  std::sort(sorted.begin(), sorted.end());
  if (sorted.front() < 0 || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    return index;
  const char* spec = std::getenv("PRISM_GPU_TOPOLOGY");
  Result<gpu::Topology> topology =
      spec != nullptr && *spec ? gpu::Topology::Load(spec) : gpu::Topology::Discover();
  if (!topology.ok() || sorted.back() >= topology->gpu_count()) return index;
  std::vector<int> ring = topology->RingOrder(gpus);
  return static_cast<int>(std::find(ring.begin(), ring.end(), gpus[index]) - ring.begin());
}

void CheckName(const std::string& name) {
  if (name.empty() || name.size() > 200 || !std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    throw InvalidArgumentError(
        "a collective group's name is 1 to 200 letters, digits, '-', '_' or '.': '" + name + "'");
  }
}

void CheckOptions(const GroupOptions& options) {
  if (options.timeout.count() <= 0)
    throw InvalidArgumentError("a collective group's timeout must be positive");
}

struct Registry {
  Mutex mu;
  std::map<std::string, std::unique_ptr<Group>> groups;
  std::map<std::string, std::string> generations;  // of the groups joined
  std::map<std::string, JoinInfo> infos;           // of the groups joined (with their ranks' pids)
  std::map<std::string, uint64_t> splits;          // SplitGroup calls on each so far
  std::set<std::string> split_failed;              // groups a split of which failed here
  std::map<std::string, std::shared_ptr<Mutex>> join_locks;  // one join of a name at a time here
};
Registry& TheRegistry() {
  static Registry* r = new Registry();
  return *r;
}

// Held while this process joins group `name` (or splits it): joins of other groups go on
// meanwhile, as two processes may each be joining a group the other has yet to join.
std::shared_ptr<Mutex> JoinLock(const std::string& name) {
  Registry& r = TheRegistry();
  MutexLock lock(r.mu);
  auto& m = r.join_locks[name];
  if (!m) m = std::make_shared<Mutex>();
  return m;
}

// A free TCP port on loopback for torch.distributed's store (rank 0 picks it).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 29500;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 29500;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// The nccl backend: libprism_collective_nccl.so next to this library, loaded when first asked for.
struct NcclLibrary {
  int (*unique_id)(char* out, char* error, size_t size) = nullptr;
  int (*join)(const JoinInfo* info, const char* id, Group** out, char* error,
              size_t size) = nullptr;
  int (*split)(Group* parent, const JoinInfo* info, int color, Group** out, char* error,
               size_t size) = nullptr;
  std::string error;
};

const NcclLibrary& Nccl() {
  static NcclLibrary lib = [] {
    NcclLibrary l;
    Result<void*> h = OpenBesideLibprism("libprism_collective_nccl.so");
    if (!h.ok()) {
      l.error = "the nccl backend is not available here (" + h.status().message() +
                "): it is built where the CUDA toolkit and NCCL are, and runs where a GPU is";
      return l;
    }
    l.unique_id = reinterpret_cast<decltype(l.unique_id)>(dlsym(*h, "prism_nccl_unique_id"));
    l.join = reinterpret_cast<decltype(l.join)>(dlsym(*h, "prism_nccl_join"));
    l.split = reinterpret_cast<decltype(l.split)>(dlsym(*h, "prism_nccl_split"));
    if (!l.unique_id || !l.join || !l.split)
      l.error = "libprism_collective_nccl.so lacks its entry points";
    return l;
  }();
  return lib;
}

std::unique_ptr<Group> JoinNccl(const JoinInfo& info) {
  const NcclLibrary& lib = Nccl();
  std::string head = "collective group '" + info.name + "' (rank " + std::to_string(info.rank) +
                     " of " + std::to_string(info.size) + "): ";
  if (!lib.error.empty()) throw InvalidArgumentError(head + lib.error);
  char error[512] = {};
  std::string key = info.prefix() + "nccl_id";
  if (info.rank == 0) {  // rank 0's unique id, through the control store
    char id[128];
    if (lib.unique_id(id, error, sizeof error) != 0) throw CollectiveError(head + error);
    KvPutIfAbsent(key, std::string(id, sizeof id));
  }
  if (!KvWait({key}, info.timeout))
    throw CollectiveError(head + "rank 0 did not publish the nccl unique id in time");
  std::string id = KvGet(key).value_or("");
  if (id.size() != 128) throw CollectiveError(head + "a malformed nccl unique id");
  Group* group = nullptr;
  if (lib.join(&info, id.data(), &group, error, sizeof error) != 0)
    throw CollectiveError(head + error);
  return std::unique_ptr<Group>(group);
}

Group& Join(JoinInfo info) {
  Registry& r = TheRegistry();
  std::shared_ptr<Mutex> join_lock = JoinLock(info.name);
  MutexLock joining(*join_lock);
  {
    MutexLock lock(r.mu);
    auto it = r.groups.find(info.name);
    if (it != r.groups.end() && r.generations[info.name] == info.generation) return *it->second;
  }
  // torch.distributed's environment (env://): rank 0 publishes where its store will listen.
  std::string master_key = info.prefix() + "master";
  if (info.rank == 0 && info.environment)
    KvPutIfAbsent(master_key, "127.0.0.1:" + std::to_string(FreePort()));
  Rendezvous(info);
  std::unique_ptr<Group> group;
  if (info.backend == Backend::kGloo) {
    group = JoinGloo(info);
  } else {
    group = JoinNccl(info);
  }
  if (info.environment) {
    if (auto master = KvGet(master_key)) {
      auto colon = master->rfind(':');
      setenv("MASTER_ADDR", master->substr(0, colon).c_str(), 1);
      setenv("MASTER_PORT", master->substr(colon + 1).c_str(), 1);
    }
    setenv("RANK", std::to_string(info.rank).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(info.rank).c_str(), 1);  // one node: the rank
    setenv("WORLD_SIZE", std::to_string(info.size).c_str(), 1);
  }
  MutexLock lock(r.mu);
  auto& slot = r.groups[info.name];
  slot = std::move(group);  // (a broken one of an older generation goes)
  r.generations[info.name] = info.generation;
  r.infos[info.name] = info;
  r.splits[info.name] = 0;
  r.split_failed.erase(info.name);
  return *slot;
}

}  // namespace

// Whether group `name` is declared now under another generation than `generation`.
bool Recreated(const std::string& name, const std::string& generation) {
  auto text = KvGet(GroupKey(name));
  return text && Declaration::Decode(name, *text).generation != generation;
}

namespace {}  // namespace

void KvSet(const std::string& key, const std::string& value) {
  Core()->KvPut(kNamespace, key, value, true);
}
bool KvPutIfAbsent(const std::string& key, const std::string& value) {
  return !Core()->KvPut(kNamespace, key, value, false);
}
std::optional<std::string> KvGet(const std::string& key) { return Core()->KvGet(kNamespace, key); }
void KvDelete(const std::string& key) { Core()->KvDelete(kNamespace, key); }

bool KvWait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto core = Core();
  auto pause = std::chrono::microseconds(200);
  for (const std::string& key : keys) {
    while (!core->KvGet(kNamespace, key)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(20));
    }
  }
  return true;
}

std::optional<std::vector<std::string>> KvExchange(const std::string& prefix, int index, int size,
                                                   const std::string& value,
                                                   std::chrono::milliseconds timeout,
                                                   std::string* missing) {
  KvSet(prefix + std::to_string(index), value);
  std::vector<std::string> keys;
  for (int i = 0; i < size; ++i) keys.push_back(prefix + std::to_string(i));
  bool all = KvWait(keys, timeout);
  std::vector<std::string> values;
  missing->clear();
  for (int i = 0; i < size; ++i) {
    auto v = KvGet(keys[i]);
    if (!v) *missing += (missing->empty() ? "" : ", ") + std::to_string(i);
    values.push_back(v.value_or(""));
  }
  if (!all && !missing->empty()) return std::nullopt;
  return values;
}

void Rendezvous(JoinInfo& info) {
  std::string missing;
  auto pids = KvExchange(info.prefix() + "joined/", info.rank, info.size, std::to_string(getpid()),
                         info.timeout, &missing);
  if (!pids) {
    throw CollectiveError("collective group '" + info.name + "' (rank " +
                          std::to_string(info.rank) + " of " + std::to_string(info.size) +
                          "): rank " + missing + " did not join within " +
                          std::to_string(info.timeout.count()) + " ms");
  }
  info.pids.clear();
  for (const std::string& pid : *pids) info.pids.push_back(std::atoi(pid.c_str()));
}

std::string Diagnose(const JoinInfo& info, const char* op, const std::string& what, uint64_t seq) {
  std::string gone;
  // A dying process closes its connections before it is gone: give it a moment to be.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  do {
    for (int r = 0; r < info.size && r < static_cast<int>(info.pids.size()); ++r) {
      if (r == info.rank || info.pids[r] <= 0) continue;
      if (ProcessGone(info.pids[r])) {
        gone += (gone.empty() ? "" : ", ") + std::to_string(r) + " (pid " +
                std::to_string(info.pids[r]) + ")";
      }
    }
    if (gone.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (gone.empty() && std::chrono::steady_clock::now() < deadline);
  if (!gone.empty()) return std::string(op) + " failed: rank " + gone + " is gone (" + what + ")";
  if (seq > 0) {
    // Every rank alive: those that failed at this collective say so; one that never came to it
    // (it stalls, or is elsewhere in its program) does not, and is named.
    std::string prefix = info.prefix() + "failed/" + std::to_string(seq) + "/";
    KvSet(prefix + std::to_string(info.rank), "1");
    std::string absent;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    do {
      absent.clear();
      for (int r = 0; r < info.size; ++r) {
        if (!KvGet(prefix + std::to_string(r)))
          absent += (absent.empty() ? "" : ", ") + std::to_string(r);
      }
      if (!absent.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (!absent.empty() && std::chrono::steady_clock::now() < until);
    if (!absent.empty()) {
      return std::string(op) + " did not complete within " + std::to_string(info.timeout.count()) +
             " ms: rank " + absent + " did not take part (" + what + ")";
    }
  }
  return std::string(op) + " did not complete within " + std::to_string(info.timeout.count()) +
         " ms: another rank did not take part (" + what + ")";
}

size_t ElementSize(DType dtype) { return gpu::DTypeSize(dtype); }

bool Reduces(const char* op) {
  return std::strcmp(op, "allreduce") == 0 || std::strcmp(op, "reduce-scatter") == 0 ||
         std::strcmp(op, "reduce") == 0;
}

bool IsCollective(const char* op) {
  return std::strcmp(op, "send") != 0 && std::strcmp(op, "recv") != 0 &&
         std::strcmp(op, "sendrecv") != 0;
}

void CheckDType(DType dtype, bool reduces) {
  if (dtype == DType::kUInt8 && !reduces) return;
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kInt32:
    case DType::kInt64:
      return;
    default:
      throw InvalidArgumentError(
          std::string("collectives take float16, bfloat16, float32, float64, int32 and int64") +
          (reduces ? "" : " (and uint8 where nothing is reduced)") + ", not " +
          std::string(gpu::DTypeName(dtype)));
  }
}

void DeclareGroup(const std::vector<ActorId>& members, Backend backend, const std::string& name,
                  const GroupOptions& options) {
  CheckName(name);
  CheckOptions(options);
  if (members.empty())
    throw InvalidArgumentError("collective group '" + name + "' needs at least one actor");
  Declaration d;
  d.backend = backend;
  d.size = static_cast<int>(members.size());
  d.timeout = options.timeout;
  d.generation = RandomUniqueId().Hex().substr(0, 16);
  d.order = options.order;
  for (const ActorId& a : members) {
    if (a.IsNil())
      throw InvalidArgumentError("collective group '" + name + "': an empty ActorHandle");
    if (std::find(d.members.begin(), d.members.end(), a.Hex()) != d.members.end()) {
      throw InvalidArgumentError("collective group '" + name + "': actor " + a.Hex() +
                                 " is named twice");
    }
    d.members.push_back(a.Hex());
  }
  if (!KvPutIfAbsent(GroupKey(name), d.Encode())) {
    throw InvalidArgumentError("a collective group named '" + name +
                               "' exists already (DestroyGroup it first)");
  }
}

}  // namespace internal

Group& GetGroup(const std::string& name) {
  using namespace internal;
  {
    Registry& r = TheRegistry();
    MutexLock lock(r.mu);
    auto it = r.groups.find(name);
    // A broken membership gives way to the group created again under its name (a member that did
    // not destroy it itself joins the new one).
    if (it != r.groups.end() && !(it->second->broken() && Recreated(name, r.generations[name]))) {
      return *it->second;
    }
  }
  CheckName(name);
  auto text = KvGet(GroupKey(name));
  if (!text) {
    throw InvalidArgumentError("there is no collective group '" + name +
                               "' (CreateGroup it from the driver, or InitGroup it in every rank)");
  }
  Declaration d = Declaration::Decode(name, *text);
  if (d.members.empty()) {
    throw InvalidArgumentError("collective group '" + name +
                               "' is declared by its ranks: join it with InitGroup");
  }
  ActorId me = Core()->actor_id();
  auto at = std::find(d.members.begin(), d.members.end(), me.IsNil() ? std::string("-") : me.Hex());
  if (at == d.members.end()) {
    throw InvalidArgumentError("this process (" +
                               (me.IsNil() ? std::string("not an actor") : "actor " + me.Hex()) +
                               ") is not a member of collective group '" + name + "'");
  }
  int rank = static_cast<int>(at - d.members.begin());
  if (d.order == RankOrder::kTopology) rank = TopologyRank(name, d, rank);
  JoinInfo info{name, d.generation, rank, d.size, d.backend, d.timeout};
  return Join(info);
}

Group& InitGroup(const std::string& name, int world_size, int rank, Backend backend,
                 GroupOptions options) {
  return internal::InitGroupOn(name, world_size, rank, backend, options, 0, true);
}

Group& internal::InitGroupOn(const std::string& name, int world_size, int rank, Backend backend,
                             GroupOptions options, int device, bool environment) {
  CheckName(name);
  CheckOptions(options);
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw InvalidArgumentError("collective group '" + name + "': rank " + std::to_string(rank) +
                               " of " + std::to_string(world_size) + " is out of range");
  }
  Declaration mine;
  mine.backend = backend;
  mine.size = world_size;
  mine.timeout = options.timeout;
  mine.generation = RandomUniqueId().Hex().substr(0, 16);
  KvPutIfAbsent(GroupKey(name), mine.Encode());  // the first rank's declaration stands
  auto text = KvGet(GroupKey(name));
  if (!text)
    throw CollectiveError("collective group '" + name +
                          "' was destroyed while it was being joined");
  Declaration d = Declaration::Decode(name, *text);
  if (!d.members.empty()) {
    throw InvalidArgumentError("collective group '" + name +
                               "' was created from the driver: join it with GetGroup");
  }
  if (d.size != world_size || d.backend != backend) {
    throw InvalidArgumentError("collective group '" + name + "' is a " + BackendName(d.backend) +
                               " group of " + std::to_string(d.size) + " ranks, not " +
                               BackendName(backend) + " of " + std::to_string(world_size));
  }
  JoinInfo info{name, d.generation, rank, d.size, d.backend, d.timeout};
  info.device = device;
  info.environment = environment;
  return Join(info);
}

Group* SplitGroup(const std::string& parent, const std::string& name, int color, int key) {
  using namespace internal;
  CheckName(name);
  if (color < kNoColor) {
    throw InvalidArgumentError("collective group '" + parent +
                               "': a split's color is >= 0, or kNoColor, not " +
                               std::to_string(color));
  }
  Registry& r = TheRegistry();
  std::shared_ptr<Mutex> join_lock = JoinLock(parent);
  MutexLock joining(*join_lock);  // (DestroyGroup(parent) waits for it)
  Group* p = nullptr;
  JoinInfo from;
  uint64_t n = 0;
  bool failed_before = false, in_use = false;
  {
    MutexLock lock(r.mu);
    auto it = r.groups.find(parent);
    if (it == r.groups.end()) {
      throw InvalidArgumentError("this process is not a member of collective group '" + parent +
                                 "' (join it before splitting it)");
    }
    p = it->second.get();
    from = r.infos[parent];
    n = ++r.splits[parent];  // (counted whatever happens next, as on every rank)
    failed_before = r.split_failed.count(parent) > 0;
    in_use = r.groups.count(name) > 0;
  }
  std::string head = "collective group '" + parent + "' (rank " + std::to_string(from.rank) +
                     " of " + std::to_string(from.size) + "): split number " + std::to_string(n);
  std::string prefix = from.prefix() + "split/" + std::to_string(n) + "/";
  // A split that failed on a rank (refused, or not every rank came) leaves the ranks' split counts
  // apart: the group splits no more; the ranks say so in the control store.
  auto fail = [&](auto error) {
    {
      MutexLock lock(r.mu);
      r.split_failed.insert(parent);
    }
    KvSet(prefix + "failed", "1");
    throw error;
  };
  if (failed_before) {
    fail(CollectiveError(head +
                         ": an earlier split of it failed: destroy the group and create it again"));
  }
  if (in_use)
    fail(InvalidArgumentError(head + ": a collective group named '" + name +
                              "' is in use in this process"));
  if (KvGet(GroupKey(name))) {
    fail(InvalidArgumentError(head + ": a collective group named '" + name +
                              "' is declared already (a subgroup needs a name of its own)"));
  }
  if (p->broken())
    fail(CollectiveError(head + ": the group is broken: destroy it and create it again"));
  // Every rank's color and key, through the control store.
  // (Waited for in slices: a rank on which it failed says so meanwhile.)
  std::string missing;
  std::optional<std::vector<std::string>> chosen;
  auto deadline = std::chrono::steady_clock::now() + from.timeout;
  while (!chosen) {
    if (KvGet(prefix + "failed")) {
      fail(CollectiveError(
          head + ": it failed on another rank" +
          (missing.empty() ? std::string() : " (rank " + missing + " did not come)")));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      fail(CollectiveError(head + ": rank " + missing + " did not come within " +
                           std::to_string(from.timeout.count()) + " ms"));
    }
    chosen =
        KvExchange(prefix, from.rank, from.size, std::to_string(color) + "," + std::to_string(key),
                   std::min(left, std::chrono::milliseconds(100)), &missing);
  }
  if (KvGet(prefix + "failed")) fail(CollectiveError(head + ": it failed on another rank"));
  std::vector<std::tuple<int, int>> mine;  // (key, parent rank) of this color's ranks
  for (int rank = 0; rank < from.size; ++rank) {
    const std::string& v = (*chosen)[rank];
    int c = std::atoi(v.c_str());
    int k = std::atoi(v.c_str() + v.find(',') + 1);
    if (c == color && color != kNoColor) mine.emplace_back(k, rank);
  }
  std::sort(mine.begin(), mine.end());
  std::unique_ptr<Group> group;
  JoinInfo info;
  if (color != kNoColor) {
    info.name = name;
    info.generation = from.generation + ".s" + std::to_string(n) + ".c" + std::to_string(color);
    info.size = static_cast<int>(mine.size());
    info.backend = from.backend;
    info.timeout = from.timeout;
    for (size_t i = 0; i < mine.size(); ++i) {
      int rank = std::get<1>(mine[i]);
      if (rank == from.rank) info.rank = static_cast<int>(i);
      info.pids.push_back(rank < static_cast<int>(from.pids.size()) ? from.pids[rank] : 0);
    }
  }
  if (from.backend == Backend::kNccl) {
    // Every rank of the parent takes part in ncclCommSplit, those in no subgroup too.
    const NcclLibrary& lib = Nccl();
    char error[512] = {};
    Group* out = nullptr;
    if (lib.split(p, color == kNoColor ? nullptr : &info, color, &out, error, sizeof error) != 0) {
      fail(CollectiveError(head + ": " + error));
    }
    group.reset(out);
  } else if (color != kNoColor) {
    try {
      group = JoinGloo(info);
    } catch (const CollectiveError& e) {
      fail(CollectiveError(head + ": " + e.what()));
    }
  }
  if (!group) return nullptr;
  MutexLock lock(r.mu);
  auto& slot = r.groups[name];
  if (slot) {  // (joined under that name meanwhile, by another thread)
    throw InvalidArgumentError(head + ": a collective group named '" + name +
                               "' is in use in this process");
  }
  slot = std::move(group);
  r.generations[name] = info.generation;
  r.infos[name] = info;
  r.splits[name] = 0;
  return slot.get();
}

void DestroyGroup(const std::string& name) {
  using namespace internal;
  std::shared_ptr<Mutex> join_lock = JoinLock(name);
  MutexLock joining(*join_lock);  // (not while it is joined or split)
  std::unique_ptr<Group> mine;
  {
    Registry& r = TheRegistry();
    MutexLock lock(r.mu);
    auto it = r.groups.find(name);
    if (it != r.groups.end()) {
      mine = std::move(it->second);
      r.groups.erase(it);
      r.generations.erase(name);
      r.infos.erase(name);
      r.splits.erase(name);
      r.split_failed.erase(name);
    }
  }
  mine.reset();  // closes its connections
  if (auto text = KvGet(GroupKey(name))) {
    // Its rendezvous keys go with the declaration (a member that destroyed it before its peers
    // did leaves them the keys they still read: the declaration's generation changes on
    // re-creation).
    KvDelete(GroupKey(name));
  }
}

bool InGroup(const std::string& name) {
  internal::Registry& r = internal::TheRegistry();
  MutexLock lock(r.mu);
  return r.groups.count(name) > 0;
}

}  // namespace prism::collective

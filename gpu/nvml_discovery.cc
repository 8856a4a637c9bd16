// Topology::Discover: this machine's GPUs through NVML, loaded with dlopen (so neither the build
// nor a machine without the driver needs it), and NUMA placement from sysfs.
#include <dlfcn.h>
#include <prism/gpu/topology.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <numeric>

namespace prism::gpu {
namespace {

// The few NVML declarations used (nvml.h's ABI, which NVML keeps stable).
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct NvmlPciInfo {  // nvmlPciInfo_t (v3)
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
};
constexpr int kNvmlTopologySingle = 10, kNvmlTopologyMultiple = 20;
constexpr unsigned kNvmlMaxLinks = 18;
constexpr int kNvmlLinkDeviceTypeSwitch = 1;

struct Nvml {
  void* lib = nullptr;
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  nvmlReturn_t (*count)(unsigned*);
  nvmlReturn_t (*handle)(unsigned, nvmlDevice_t*);
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned);
  nvmlReturn_t (*memory)(nvmlDevice_t, NvmlMemory*);
  nvmlReturn_t (*pci)(nvmlDevice_t, NvmlPciInfo*);
  nvmlReturn_t (*ancestor)(nvmlDevice_t, nvmlDevice_t, int*);
  nvmlReturn_t (*link_state)(nvmlDevice_t, unsigned, int*);
  nvmlReturn_t (*link_remote_pci)(nvmlDevice_t, unsigned, NvmlPciInfo*);
  nvmlReturn_t (*link_remote_type)(nvmlDevice_t, unsigned, int*);
  nvmlReturn_t (*link_version)(nvmlDevice_t, unsigned, unsigned*);
  nvmlReturn_t (*pcie_gen)(nvmlDevice_t, unsigned*);
  nvmlReturn_t (*pcie_width)(nvmlDevice_t, unsigned*);

  ~Nvml() {
    if (lib) {
      shutdown();
      dlclose(lib);
    }
  }
  template <typename F>
  bool Sym(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(lib, name));
    return f != nullptr;
  }
  bool Load() {
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return false;
    bool ok = Sym(init, "nvmlInit_v2") && Sym(shutdown, "nvmlShutdown") &&
              Sym(count, "nvmlDeviceGetCount_v2") && Sym(handle, "nvmlDeviceGetHandleByIndex_v2") &&
              Sym(uuid, "nvmlDeviceGetUUID") && Sym(name, "nvmlDeviceGetName") &&
              Sym(memory, "nvmlDeviceGetMemoryInfo") && Sym(pci, "nvmlDeviceGetPciInfo_v3") &&
              Sym(ancestor, "nvmlDeviceGetTopologyCommonAncestor") &&
              Sym(link_state, "nvmlDeviceGetNvLinkState") &&
              Sym(link_remote_pci, "nvmlDeviceGetNvLinkRemotePciInfo_v2") &&
              Sym(pcie_gen, "nvmlDeviceGetMaxPcieLinkGeneration") &&
              Sym(pcie_width, "nvmlDeviceGetMaxPcieLinkWidth");
    Sym(link_remote_type, "nvmlDeviceGetNvLinkRemoteDeviceType");  // optional (newer drivers)
    Sym(link_version, "nvmlDeviceGetNvLinkVersion");
    if (!ok || init() != 0) {
      dlclose(lib);
      lib = nullptr;
      return false;
    }
    return true;
  }
};

std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "00000000:18:00.0" -> "0000:18:00.0", sysfs's spelling.
std::string SysfsBusId(std::string bus_id) {
  for (char& c : bus_id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return bus_id.size() > 12 ? bus_id.substr(bus_id.size() - 12) : bus_id;
}

int NumaOf(const std::string& sysfs_bus_id) {
  std::string v = ReadLine("/sys/bus/pci/devices/" + sysfs_bus_id + "/numa_node");
  int n = v.empty() ? 0 : std::atoi(v.c_str());
  return n < 0 ? 0 : n;
}

}  // namespace

Result<Topology> Topology::Discover() {
  Nvml nvml;
  if (!nvml.Load()) return Status::NotFound("no NVIDIA driver (libnvidia-ml.so.1 did not load)");
  unsigned count = 0;
  if (nvml.count(&count) != 0 || count == 0) return Status::NotFound("NVML reports no GPUs");
  Topology t;
  t.name_ = "discovered";
  t.description_ = "this machine, discovered through NVML and sysfs";
  std::vector<nvmlDevice_t> devs(count);
  std::map<std::string, int> by_bus;
  std::map<int, bool> numa_ids;
  for (unsigned i = 0; i < count; ++i) {
    if (nvml.handle(i, &devs[i]) != 0)
      return Status::Internal("NVML: no handle for GPU " + std::to_string(i));
    TopologyGpu g;
    char buf[128] = {};
    if (nvml.uuid(devs[i], buf, sizeof buf) == 0) g.uuid = buf;
    if (nvml.name(devs[i], buf, sizeof buf) == 0) g.name = buf;
    NvmlMemory mem{};
    if (nvml.memory(devs[i], &mem) == 0) g.memory_bytes = mem.total;
    NvmlPciInfo pci{};
    if (nvml.pci(devs[i], &pci) == 0) g.pci_bus_id = SysfsBusId(pci.bus_id);
    g.numa_node = NumaOf(g.pci_bus_id);
    numa_ids[g.numa_node] = true;
    by_bus[g.pci_bus_id] = static_cast<int>(i);
    t.gpus_.push_back(std::move(g));
  }
  for (const auto& [id, unused] : numa_ids) {
    t.numa_.push_back(
        NumaNode{id, ReadLine("/sys/devices/system/node/node" + std::to_string(id) + "/cpulist")});
  }
  // PCIe switches: GPUs whose common ancestor is one or more switches (not a host bridge).
  std::vector<int> group(count);
  std::iota(group.begin(), group.end(), 0);
  bool any_switch = false;
  for (unsigned a = 0; a < count; ++a) {
    for (unsigned b = a + 1; b < count; ++b) {
      int level = 0;
      if (nvml.ancestor(devs[a], devs[b], &level) == 0 &&
          (level == kNvmlTopologySingle || level == kNvmlTopologyMultiple)) {
        int from = group[b], to = group[a];
        for (int& x : group)
          if (x == from) x = to;
        any_switch = true;
      }
    }
  }
  if (any_switch) {
    std::map<int, int> members;
    for (int x : group) ++members[x];
    for (unsigned i = 0; i < count; ++i)
      t.gpus_[i].pcie_switch = members[group[i]] > 1 ? group[i] : -1;
  }
  // NVLink: links to another GPU count for that pair; links to NVSwitches join every GPU that
  // has them, at the smaller of the two link counts.
  t.nvlinks_.assign(count, std::vector<int>(count, 0));
  std::vector<int> switch_links(count, 0);
  unsigned version = 0;
  for (unsigned a = 0; a < count; ++a) {
    for (unsigned l = 0; l < kNvmlMaxLinks; ++l) {
      int active = 0;
      if (nvml.link_state(devs[a], l, &active) != 0 || !active) continue;
      if (version == 0 && nvml.link_version) nvml.link_version(devs[a], l, &version);
      int type = 0;
      if (nvml.link_remote_type && nvml.link_remote_type(devs[a], l, &type) == 0 &&
          type == kNvmlLinkDeviceTypeSwitch) {
        ++switch_links[a];
        continue;
      }
      NvmlPciInfo remote{};
      if (nvml.link_remote_pci(devs[a], l, &remote) != 0) continue;
      auto it = by_bus.find(SysfsBusId(remote.bus_id));
      if (it != by_bus.end())
        ++t.nvlinks_[a][it->second];
      else
        ++switch_links[a];  // not a GPU of ours: an NVSwitch on drivers without the type query
    }
  }
  for (unsigned a = 0; a < count; ++a)
    for (unsigned b = 0; b < count; ++b)
      if (a != b && switch_links[a] > 0 && switch_links[b] > 0)
        t.nvlinks_[a][b] = std::max(t.nvlinks_[a][b], std::min(switch_links[a], switch_links[b]));
  t.nvlink_gbps_ = version >= 5 ? 50 : 25;  // per link, one direction (NVLink 2-4: 25, 5: 50)
  unsigned gen = 0, width = 0;
  if (nvml.pcie_gen(devs[0], &gen) == 0 && nvml.pcie_width(devs[0], &width) == 0 && gen > 0) {
    static const double kLaneGbps[] = {0, 0.25, 0.5, 0.985, 1.969, 3.938, 7.563};
    t.pcie_gbps_ = kLaneGbps[std::min(gen, 6u)] * width;
    t.pix_gbps_ = t.pcie_gbps_;
    t.node_gbps_ = t.pcie_gbps_ * 0.8;
    t.sys_gbps_ = t.pcie_gbps_ * 0.5;
  }
  // Sysfs: RDMA NICs and their NUMA nodes.
  for (int k = 0; k < 64; ++k) {
    std::string base = "/sys/class/infiniband/mlx5_" + std::to_string(k);
    std::ifstream probe(base + "/device/numa_node");
    if (!probe) continue;
    int numa = 0;
    probe >> numa;
    t.nics_.push_back(TopologyNic{"mlx5_" + std::to_string(k), numa < 0 ? 0 : numa, -1, 0});
  }
  PRISM_RETURN_IF_ERROR(t.Validate());
  return t;
}

}  // namespace prism::gpu

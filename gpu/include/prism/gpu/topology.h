// A node's GPU topology: GPUs, NVLink/NVSwitch links, PCIe switches, NUMA nodes and NICs, with the
// bandwidth of the best path between any two GPUs. Discovered through NVML (loaded at run time)
// and sysfs, or loaded from a profile (shipped ones by name, or a JSON file).
#pragma once

#include <prism/status.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace prism::gpu {

/// How two devices are connected, best first (nvidia-smi topo -m's words).
enum class PathKind : uint8_t {
  kSelf,    // X
  kNvLink,  // NV#: NVLink or NVSwitch
  kPix,     // both behind one PCIe switch
  kNode,    // PCIe through the host bridges of one NUMA node
  kSys,     // PCIe across NUMA nodes (the socket interconnect)
};

struct TopologyGpu {
  std::string uuid;
  std::string name;
  uint64_t memory_bytes = 0;
  std::string pci_bus_id;
  int numa_node = 0;
  int pcie_switch = -1;  // -1: directly on a root port
};

struct TopologyNic {
  std::string name;
  int numa_node = 0;
  int pcie_switch = -1;
  double gbps = 0;  // GB/s, one direction
};

struct NumaNode {
  int id = 0;
  std::string cpus;  // a Linux cpulist ("0-55,112-167")
};

class Topology {
 public:
  /// Parses a profile (JSON; see docs/gpu.md for the format). InvalidArgument names what is wrong.
  static Result<Topology> FromJson(const std::string& text);
  /// A shipped profile by name ("h100-sxm-8", "pcie-8-2numa", "nvlink-pairs-4") or a JSON file.
  static Result<Topology> Load(const std::string& name_or_path);
  /// The names of the shipped profiles.
  static std::vector<std::string> ProfileNames();
  /// This machine's GPUs through NVML and sysfs; NotFound when no driver or no GPU.
  static Result<Topology> Discover();

  const std::string& name() const { return name_; }
  const std::string& description() const { return description_; }
  int gpu_count() const { return static_cast<int>(gpus_.size()); }
  const std::vector<TopologyGpu>& gpus() const { return gpus_; }
  const std::vector<TopologyNic>& nics() const { return nics_; }
  const std::vector<NumaNode>& numa_nodes() const { return numa_; }

  PathKind Path(int a, int b) const;
  /// NVLink links between two GPUs (0 if none).
  int NvLinks(int a, int b) const { return nvlinks_[a][b]; }
  /// GB/s, one direction, of the best path between two GPUs (device memory for a == b).
  double Bandwidth(int a, int b) const;
  /// Host <-> device GB/s of a GPU's PCIe link.
  double pcie_gbps() const { return pcie_gbps_; }
  /// The matrix of bandwidths, for the scheduler ([a][b], GB/s).
  std::vector<std::vector<double>> BandwidthMatrix() const;
  /// Whether a and b are NVLink-connected, as a matrix.
  std::vector<std::vector<bool>> NvLinkMatrix() const;
  /// The CPUs of a NUMA node (empty if unknown).
  std::string NumaCpus(int numa_node) const;
  /// The CPUs of the NUMA nodes of `gpus`, as numbers (empty if unknown).
  std::vector<int> CpusNear(const std::vector<int>& gpus) const;
  /// `gpus` (indices, no repeats) in ring order for collectives: the ring whose slowest hop is
  /// the fastest, then whose hops add up to the most (NVLink neighbours adjacent, crossing a
  /// PCIe switch or a socket as few times as possible). Starts with gpus[0]; exhaustive up to 9
  /// GPUs, greedy (fastest next hop) beyond.
  std::vector<int> RingOrder(const std::vector<int>& gpus) const;

  /// Like `nvidia-smi topo -m`, plus a bandwidth matrix and a legend.
  std::string Matrix() const;
  std::string ToJson() const;

 private:
  Status Validate() const;

  std::string name_, description_;
  std::vector<TopologyGpu> gpus_;
  std::vector<TopologyNic> nics_;
  std::vector<NumaNode> numa_;
  std::vector<std::vector<int>> nvlinks_;
  double nvlink_gbps_ = 25;  // per link, one direction
  double hbm_gbps_ = 2000;
  double pcie_gbps_ = 25;
  double pix_gbps_ = 25;
  double node_gbps_ = 20;
  double sys_gbps_ = 12;
};

const char* PathKindName(PathKind kind);
/// "0-3,8,10-11" -> {0,1,2,3,8,10,11}; nullopt if malformed.
std::optional<std::vector<int>> ParseCpuList(const std::string& list);

}  // namespace prism::gpu

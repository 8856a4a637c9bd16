#include <prism/gpu/topology.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gpu/topology_profiles.h"

namespace prism::gpu {
namespace {

using nlohmann::json;

// A stable made-up UUID for a profile's GPU (sim devices need one; real ones come from NVML).
std::string ProfileUuid(const std::string& profile, int index) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : profile) h = (h ^ c) * 16777619u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "GPU-%08x-5157-4d00-8000-%012x", h, index);
  return buf;
}

}  // namespace

const char* PathKindName(PathKind kind) {
  switch (kind) {
    case PathKind::kSelf:
      return "X";
    case PathKind::kNvLink:
      return "NV";
    case PathKind::kPix:
      return "PIX";
    case PathKind::kNode:
      return "NODE";
    case PathKind::kSys:
      return "SYS";
  }
  return "?";
}

Result<Topology> Topology::FromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("topology profile is not a JSON object");
  }
  Topology t;
  try {
    t.name_ = j.value("name", "");
    t.description_ = j.value("description", "");
    json gpu = j.value("gpu", json::object());
    std::string default_name = gpu.value("name", "GPU");
    double default_gib = gpu.value("memory_gib", 16.0);
    json bw = j.value("bandwidth_gbps", json::object());
    t.hbm_gbps_ = bw.value("hbm", t.hbm_gbps_);
    t.pcie_gbps_ = bw.value("pcie", t.pcie_gbps_);
    t.nvlink_gbps_ = bw.value("nvlink_per_link", t.nvlink_gbps_);
    t.pix_gbps_ = bw.value("pix", t.pix_gbps_);
    t.node_gbps_ = bw.value("node", t.node_gbps_);
    t.sys_gbps_ = bw.value("sys", t.sys_gbps_);
    for (const json& n : j.value("numa", json::array())) {
      t.numa_.push_back(NumaNode{n.at("id").get<int>(), n.value("cpus", "")});
    }
    if (t.numa_.empty()) t.numa_.push_back(NumaNode{0, ""});
    const json& gpus = j.at("gpus");
    if (!gpus.is_array()) return Status::InvalidArgument("topology profile: 'gpus' must be a list");
    for (size_t i = 0; i < gpus.size(); ++i) {
      const json& g = gpus[i];
      TopologyGpu out;
      out.uuid = g.value("uuid", ProfileUuid(t.name_, static_cast<int>(i)));
      out.name = g.value("name", default_name);
      out.memory_bytes = static_cast<uint64_t>(g.value("memory_gib", default_gib) * (1ull << 30));
      out.pci_bus_id = g.value("pci_bus_id", "");
      out.numa_node = g.value("numa", 0);
      out.pcie_switch = g.value("pcie_switch", -1);
      t.gpus_.push_back(std::move(out));
    }
    for (const json& n : j.value("nics", json::array())) {
      t.nics_.push_back(TopologyNic{n.value("name", "nic"), n.value("numa", 0),
                                    n.value("pcie_switch", -1), n.value("gbps", 0.0)});
    }
    size_t count = t.gpus_.size();
    t.nvlinks_.assign(count, std::vector<int>(count, 0));
    json nv = j.value("nvlink", json::object());
    if (nv.contains("all_pairs")) {
      int links = nv.at("all_pairs").get<int>();
      for (size_t a = 0; a < count; ++a)
        for (size_t b = 0; b < count; ++b)
          if (a != b) t.nvlinks_[a][b] = links;
    }
    for (const json& p : nv.value("pairs", json::array())) {
      if (!p.is_array() || p.size() != 3) {
        return Status::InvalidArgument("topology profile: an nvlink pair is [gpu, gpu, links]");
      }
      int a = p[0].get<int>(), b = p[1].get<int>(), links = p[2].get<int>();
      if (a < 0 || b < 0 || static_cast<size_t>(a) >= count || static_cast<size_t>(b) >= count ||
          a == b || links < 0) {
        return Status::InvalidArgument("topology profile: bad nvlink pair " + p.dump());
      }
      t.nvlinks_[a][b] = t.nvlinks_[b][a] = links;
    }
    if (nv.contains("matrix")) {
      auto m = nv.at("matrix").get<std::vector<std::vector<int>>>();
      if (m.size() != count) return Status::InvalidArgument("topology profile: nvlink matrix size");
      for (size_t a = 0; a < count; ++a) {
        if (m[a].size() != count)
          return Status::InvalidArgument("topology profile: nvlink matrix size");
        for (size_t b = 0; b < count; ++b) t.nvlinks_[a][b] = a == b ? 0 : m[a][b];
      }
    }
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("topology profile: ") + e.what());
  }
  PRISM_RETURN_IF_ERROR(t.Validate());
  return t;
}

Status Topology::Validate() const {
  auto has_numa = [&](int id) {
    return std::any_of(numa_.begin(), numa_.end(), [&](const NumaNode& n) { return n.id == id; });
  };
  for (size_t i = 0; i < gpus_.size(); ++i) {
    if (!has_numa(gpus_[i].numa_node)) {
      return Status::InvalidArgument("topology profile: GPU " + std::to_string(i) +
                                     " is on NUMA node " + std::to_string(gpus_[i].numa_node) +
                                     ", which the profile does not list");
    }
    if (gpus_[i].memory_bytes == 0) {
      return Status::InvalidArgument("topology profile: GPU " + std::to_string(i) +
                                     " has no memory");
    }
    for (size_t k = 0; k < i; ++k) {
      if (gpus_[k].uuid == gpus_[i].uuid) {
        return Status::InvalidArgument("topology profile: GPUs " + std::to_string(k) + " and " +
                                       std::to_string(i) + " share the UUID " + gpus_[i].uuid);
      }
    }
  }
  for (double v : {hbm_gbps_, pcie_gbps_, pix_gbps_, node_gbps_, sys_gbps_}) {
    if (!(v > 0)) return Status::InvalidArgument("topology profile: bandwidths must be > 0");
  }
  if (nvlink_gbps_ < 0) return Status::InvalidArgument("topology profile: nvlink_per_link < 0");
  return Status::OK();
}

Result<Topology> Topology::Load(const std::string& name_or_path) {
  for (const auto& [name, text] : internal::ShippedProfiles()) {
    if (name == name_or_path) return FromJson(text);
  }
  std::ifstream in(name_or_path);
  if (!in) {
    std::string known;
    for (const auto& n : ProfileNames()) known += (known.empty() ? "" : ", ") + n;
    return Status::NotFound("no topology profile '" + name_or_path +
                            "': not a file, nor a shipped profile (" + known + ")");
  }
  std::stringstream text;
  text << in.rdbuf();
  auto t = FromJson(text.str());
  if (!t.ok()) return Status::InvalidArgument(name_or_path + ": " + t.status().message());
  return t;
}

std::vector<std::string> Topology::ProfileNames() {
  std::vector<std::string> names;
  for (const auto& [name, text] : internal::ShippedProfiles()) names.push_back(name);
  return names;
}

PathKind Topology::Path(int a, int b) const {
  if (a == b) return PathKind::kSelf;
  if (nvlinks_[a][b] > 0 && nvlink_gbps_ > 0) return PathKind::kNvLink;
  const TopologyGpu& x = gpus_[a];
  const TopologyGpu& y = gpus_[b];
  if (x.pcie_switch >= 0 && x.pcie_switch == y.pcie_switch) return PathKind::kPix;
  if (x.numa_node == y.numa_node) return PathKind::kNode;
  return PathKind::kSys;
}

double Topology::Bandwidth(int a, int b) const {
  switch (Path(a, b)) {
    case PathKind::kSelf:
      return hbm_gbps_;
    case PathKind::kNvLink:
      return nvlinks_[a][b] * nvlink_gbps_;
    case PathKind::kPix:
      return pix_gbps_;
    case PathKind::kNode:
      return node_gbps_;
    case PathKind::kSys:
      return sys_gbps_;
  }
  return sys_gbps_;
}

std::vector<int> Topology::RingOrder(const std::vector<int>& gpus) const {
  if (gpus.size() <= 2) return gpus;
  auto score = [&](const std::vector<int>& ring) {
    double slowest = std::numeric_limits<double>::infinity(), total = 0;
    for (size_t i = 0; i < ring.size(); ++i) {
      double bw = Bandwidth(ring[i], ring[(i + 1) % ring.size()]);
      slowest = std::min(slowest, bw);
      total += bw;
    }
    return std::make_pair(slowest, total);
  };
  if (gpus.size() <= 9) {
    std::vector<int> ring = gpus, best = gpus;  // (the given order wins ties)
    auto best_score = score(best);
    std::sort(ring.begin() + 1, ring.end());  // every order of the rest, gpus[0] first
    do {
      auto sc = score(ring);
      if (sc > best_score) {
        best_score = sc;
        best = ring;
      }
    } while (std::next_permutation(ring.begin() + 1, ring.end()));
    return best;
  }
  std::vector<int> ring{gpus[0]}, left(gpus.begin() + 1, gpus.end());
  while (!left.empty()) {
    auto next = std::max_element(left.begin(), left.end(), [&](int a, int b) {
      return Bandwidth(ring.back(), a) < Bandwidth(ring.back(), b);
    });
    ring.push_back(*next);
    left.erase(next);
  }
  return ring;
}

std::vector<std::vector<double>> Topology::BandwidthMatrix() const {
  std::vector<std::vector<double>> m(gpus_.size(), std::vector<double>(gpus_.size()));
  for (int a = 0; a < gpu_count(); ++a)
    for (int b = 0; b < gpu_count(); ++b) m[a][b] = Bandwidth(a, b);
  return m;
}

std::vector<std::vector<bool>> Topology::NvLinkMatrix() const {
  std::vector<std::vector<bool>> m(gpus_.size(), std::vector<bool>(gpus_.size()));
  for (int a = 0; a < gpu_count(); ++a)
    for (int b = 0; b < gpu_count(); ++b) m[a][b] = Path(a, b) == PathKind::kNvLink;
  return m;
}

std::string Topology::NumaCpus(int numa_node) const {
  for (const NumaNode& n : numa_)
    if (n.id == numa_node) return n.cpus;
  return "";
}

std::optional<std::vector<int>> ParseCpuList(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    char* end = nullptr;
    long lo = std::strtol(part.c_str(), &end, 10);
    long hi = lo;
    if (dash != std::string::npos) hi = std::strtol(part.c_str() + dash + 1, &end, 10);
    if (*end != '\0' || lo < 0 || hi < lo || hi > 65535) return std::nullopt;
    for (long c = lo; c <= hi; ++c) out.push_back(static_cast<int>(c));
  }
  return out;
}

std::vector<int> Topology::CpusNear(const std::vector<int>& gpus) const {
  std::vector<int> out;
  std::vector<int> seen;
  for (int g : gpus) {
    if (g < 0 || g >= gpu_count()) continue;
    int numa = gpus_[g].numa_node;
    if (std::find(seen.begin(), seen.end(), numa) != seen.end()) continue;
    seen.push_back(numa);
    auto cpus = ParseCpuList(NumaCpus(numa));
    if (cpus) out.insert(out.end(), cpus->begin(), cpus->end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Topology::Matrix() const {
  std::ostringstream out;
  int n = gpu_count();
  auto cell = [&](const std::string& s) { out << std::left << std::setw(7) << s; };
  auto nic_path = [&](const TopologyNic& nic, int numa, int sw) -> std::string {
    if (sw >= 0 && nic.pcie_switch == sw) return "PIX";
    return nic.numa_node == numa ? "NODE" : "SYS";
  };
  out << "Topology: " << (name_.empty() ? "(unnamed)" : name_) << "\n";
  if (!description_.empty()) out << description_ << "\n";
  out << "\n";
  cell("");
  for (int b = 0; b < n; ++b) cell("GPU" + std::to_string(b));
  for (size_t k = 0; k < nics_.size(); ++k) cell("NIC" + std::to_string(k));
  out << std::setw(16) << "CPU Affinity"
      << "NUMA Affinity\n";
  for (int a = 0; a < n; ++a) {
    cell("GPU" + std::to_string(a));
    for (int b = 0; b < n; ++b) {
      PathKind p = Path(a, b);
      cell(p == PathKind::kNvLink ? "NV" + std::to_string(nvlinks_[a][b]) : PathKindName(p));
    }
    for (const TopologyNic& nic : nics_)
      cell(nic_path(nic, gpus_[a].numa_node, gpus_[a].pcie_switch));
    std::string cpus = NumaCpus(gpus_[a].numa_node);
    out << std::setw(16) << (cpus.empty() ? "N/A" : cpus) << gpus_[a].numa_node << "\n";
  }
  for (size_t k = 0; k < nics_.size(); ++k) {
    const TopologyNic& nic = nics_[k];
    cell("NIC" + std::to_string(k));
    for (int b = 0; b < n; ++b) cell(nic_path(nic, gpus_[b].numa_node, gpus_[b].pcie_switch));
    for (size_t m = 0; m < nics_.size(); ++m) {
      cell(m == k ? "X" : nic_path(nics_[m], nic.numa_node, nic.pcie_switch));
    }
    out << "\n";
  }
  out << "\nBandwidth, GB/s one direction (diagonal: device memory; host link " << pcie_gbps_
      << " GB/s per GPU)\n";
  cell("");
  for (int b = 0; b < n; ++b) cell("GPU" + std::to_string(b));
  out << "\n";
  for (int a = 0; a < n; ++a) {
    cell("GPU" + std::to_string(a));
    for (int b = 0; b < n; ++b) {
      std::ostringstream v;
      v << std::fixed << std::setprecision(0) << Bandwidth(a, b);
      cell(v.str());
    }
    out << "\n";
  }
  if (!nics_.empty()) {
    out << "\nNIC Legend:\n";
    for (size_t k = 0; k < nics_.size(); ++k) {
      out << "  NIC" << k << ": " << nics_[k].name << " (" << nics_[k].gbps << " GB/s)\n";
    }
  }
  out << "\nLegend:\n"
         "  X    = Self\n"
         "  SYS  = PCIe and the interconnect between NUMA nodes (e.g. QPI/UPI)\n"
         "  NODE = PCIe and the interconnect between host bridges within a NUMA node\n"
         "  PIX  = at most one PCIe switch (both devices behind the same switch)\n"
         "  NV#  = a bonded set of # NVLinks (through NVSwitch where every pair shows it)\n";
  return out.str();
}

std::string Topology::ToJson() const {
  json j;
  j["name"] = name_;
  j["description"] = description_;
  j["bandwidth_gbps"] = {
      {"hbm", hbm_gbps_}, {"pcie", pcie_gbps_}, {"nvlink_per_link", nvlink_gbps_},
      {"pix", pix_gbps_}, {"node", node_gbps_}, {"sys", sys_gbps_}};
  j["numa"] = json::array();
  for (const NumaNode& n : numa_) j["numa"].push_back({{"id", n.id}, {"cpus", n.cpus}});
  j["gpus"] = json::array();
  for (const TopologyGpu& g : gpus_) {
    j["gpus"].push_back({{"uuid", g.uuid},
                         {"name", g.name},
                         {"memory_gib", static_cast<double>(g.memory_bytes) / (1ull << 30)},
                         {"pci_bus_id", g.pci_bus_id},
                         {"numa", g.numa_node},
                         {"pcie_switch", g.pcie_switch}});
  }
  j["nics"] = json::array();
  for (const TopologyNic& n : nics_) {
    j["nics"].push_back({{"name", n.name},
                         {"numa", n.numa_node},
                         {"pcie_switch", n.pcie_switch},
                         {"gbps", n.gbps}});
  }
  j["nvlink"] = {{"matrix", nvlinks_}};
  return j.dump(2) + "\n";
}

}  // namespace prism::gpu

#include "base/resources.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace prism {

static constexpr int64_t kMaxMilli = int64_t{1} << 60;  // memory in bytes fits (up to an exabyte)

Result<ResourceSet> ResourceSet::FromUnits(const std::map<std::string, double>& units) {
  std::map<std::string, int64_t> milli;
  for (const auto& [name, amount] : units) {
    if (!std::isfinite(amount) || amount < 0 || amount * kMilli > static_cast<double>(kMaxMilli)) {
      return Status::InvalidArgument("resource '" + name + "' has an invalid amount " +
                                     std::to_string(amount));
    }
    milli[name] = static_cast<int64_t>(std::llround(amount * kMilli));
  }
  return FromMilli(milli);
}

Result<ResourceSet> ResourceSet::FromMilli(const std::map<std::string, int64_t>& milli) {
  ResourceSet set;
  for (const auto& [name, amount] : milli) {
    if (name.empty() || name.size() > 256) {
      return Status::InvalidArgument("a resource name must have 1 to 256 characters");
    }
    if (amount < 0 || amount > kMaxMilli) {
      return Status::InvalidArgument("resource '" + name + "' has an invalid amount");
    }
    if (amount > 0) set.milli_[name] = amount;
  }
  return set;
}

int64_t ResourceSet::Get(const std::string& name) const {
  auto it = milli_.find(name);
  return it == milli_.end() ? 0 : it->second;
}

bool ResourceSet::IsSubsetOf(const ResourceSet& other) const {
  for (const auto& [name, amount] : milli_) {
    if (amount > other.Get(name)) return false;
  }
  return true;
}

void ResourceSet::Add(const ResourceSet& other) {
  for (const auto& [name, amount] : other.milli_) {
    if ((milli_[name] += amount) == 0) milli_.erase(name);
  }
}

void ResourceSet::Overdraw(const ResourceSet& other) {
  for (const auto& [name, amount] : other.milli_) {
    if ((milli_[name] -= amount) == 0) milli_.erase(name);
  }
}

ResourceSet ResourceSet::Only(const std::string& name) const {
  ResourceSet out;
  int64_t v = Get(name);
  if (v != 0) out.milli_[name] = v;
  return out;
}

void ResourceSet::Subtract(const ResourceSet& other) {
  for (const auto& [name, amount] : other.milli_) {
    auto it = milli_.find(name);
    PRISM_CHECK(it != milli_.end() && it->second >= amount);
    it->second -= amount;
    if (it->second == 0) milli_.erase(it);
  }
}

std::string ResourceSet::ToString() const {
  std::string out;
  for (const auto& [name, amount] : milli_) {
    if (!out.empty()) out += ',';
    // (No printf: a task's lease key is made from this on every submission.)
    out += name;
    out += '=';
    char buf[32];
    char* end = std::to_chars(buf, buf + sizeof(buf), amount / kMilli).ptr;
    if (int64_t frac = amount % kMilli; frac != 0) {  // (amounts are never negative)
      *end++ = '.';
      *end++ = static_cast<char>('0' + frac / 100);
      *end++ = static_cast<char>('0' + frac / 10 % 10);
      *end++ = static_cast<char>('0' + frac % 10);
    }
    out.append(buf, end);
  }
  return out.empty() ? "{}" : out;
}

bool IsDeviceResource(const std::string& name) { return name == kGpu; }

Status CheckRequestShape(const ResourceSet& shape) {
  for (const auto& [name, milli] : shape.milli()) {
    if (IsDeviceResource(name) && milli > kMilli && milli % kMilli != 0) {
      return Status::InvalidArgument(
          shape.Only(name).ToString() + ": an amount of " + name +
          " above 1 must be a whole number (a task gets whole devices, or a share of one)");
    }
  }
  return Status::OK();
}

std::vector<int> Allocation::Indices(const std::string& resource) const {
  std::vector<int> out;
  for (const DeviceShare& d : devices) {
    if (d.resource == resource) out.push_back(d.index);
  }
  return out;
}

Result<ResourcePool> ResourcePool::Create(const ResourceSet& totals) {
  ResourcePool pool;
  pool.total_ = totals;
  pool.available_ = totals;
  for (const auto& [name, milli] : totals.milli()) {
    if (!IsDeviceResource(name)) continue;
    if (milli % kMilli != 0) {
      return Status::InvalidArgument("a node has whole " + name + "s, not " +
                                     totals.Only(name).ToString());
    }
    if (milli / kMilli > 4096)
      return Status::InvalidArgument("more than 4096 " + name + "s on one node");
    for (int i = 0; i < static_cast<int>(milli / kMilli); ++i) {
      pool.capacity_[name][i] = kMilli;
      pool.free_[name][i] = kMilli;
    }
  }
  return pool;
}

ResourcePool ResourcePool::FromAllocation(const Allocation& alloc, const ResourcePool* node) {
  ResourcePool pool;
  pool.total_ = alloc.amounts;
  pool.available_ = alloc.amounts;
  for (const DeviceShare& d : alloc.devices) {
    pool.capacity_[d.resource][d.index] += d.milli;
    pool.free_[d.resource][d.index] += d.milli;
  }
  if (node != nullptr) pool.graphs_ = node->graphs_;
  return pool;
}

ResourcePool ResourcePool::Fresh() const {
  ResourcePool pool = *this;
  pool.available_ = total_;
  pool.free_ = capacity_;
  return pool;
}

Status ResourcePool::SetDeviceGraph(const std::string& resource, DeviceGraph graph) {
  int n = graph.size();
  if (static_cast<int>(graph.nvlink.size()) != n)
    return Status::InvalidArgument("device graph: matrix sizes differ");
  for (int i = 0; i < n; ++i) {
    if (static_cast<int>(graph.bandwidth[i].size()) != n ||
        static_cast<int>(graph.nvlink[i].size()) != n) {
      return Status::InvalidArgument("device graph: the matrices must be square");
    }
  }
  auto cap = capacity_.find(resource);
  int have = cap == capacity_.end() ? 0 : static_cast<int>(cap->second.size());
  if (have > n) {
    return Status::InvalidArgument("the node has " + std::to_string(have) + " " + resource +
                                   "s but the graph only " + std::to_string(n));
  }
  graphs_[resource] = std::move(graph);
  return Status::OK();
}

const DeviceGraph* ResourcePool::device_graph(const std::string& resource) const {
  auto it = graphs_.find(resource);
  return it == graphs_.end() ? nullptr : &it->second;
}

const std::map<int, int64_t>& ResourcePool::Instances(const std::string& resource) const {
  static const std::map<int, int64_t> kNone;
  auto it = free_.find(resource);
  return it == free_.end() ? kNone : it->second;
}

std::optional<std::vector<DeviceShare>> ResourcePool::Pick(const std::string& resource,
                                                           const std::map<int, int64_t>& free,
                                                           int64_t milli, DevicePolicy policy,
                                                           const std::vector<int>* allowed,
                                                           bool require_nvlink) const {
  const std::map<int, int64_t>& capacity = capacity_.at(resource);
  const DeviceGraph* graph = device_graph(resource);
  auto ok = [&](int index) {
    return allowed == nullptr ||
           std::find(allowed->begin(), allowed->end(), index) != allowed->end();
  };
  // Untouched instances: free whole devices.
  std::vector<int> whole;
  for (const auto& [index, f] : free) {
    if (f == kMilli && capacity.at(index) == kMilli && ok(index)) whole.push_back(index);
  }
  auto best_whole = [&](int k) -> std::optional<std::vector<int>> {
    if (graph != nullptr) return BestDeviceSet(*graph, whole, k, require_nvlink);
    if (static_cast<int>(whole.size()) < k || (require_nvlink && k > 1)) return std::nullopt;
    return std::vector<int>(whole.begin(), whole.begin() + k);
  };
  std::vector<DeviceShare> out;
  if (milli < kMilli) {
    // A share of one instance: packed onto the fullest that fits (or spread onto the emptiest);
    // if that is an untouched one, the one whose loss hurts later requests least.
    const std::pair<const int, int64_t>* best = nullptr;
    for (const auto& entry : free) {
      if (entry.second < milli || !ok(entry.first)) continue;
      bool better =
          best == nullptr || (policy == DevicePolicy::kPack ? entry.second < best->second
                                                            : entry.second > best->second);
      if (better) best = &entry;
    }
    if (best == nullptr) return std::nullopt;
    int index = best->first;
    if (best->second == kMilli && capacity.at(index) == kMilli) {
      if (auto one = best_whole(1)) index = (*one)[0];
    }
    out.push_back(DeviceShare{resource, index, milli});
    return out;
  }
  auto set = best_whole(static_cast<int>(milli / kMilli));
  if (!set) return std::nullopt;
  for (int index : *set) out.push_back(DeviceShare{resource, index, kMilli});
  return out;
}

bool ResourcePool::CanEverFit(const ResourceSet& shape) const {
  if (!shape.IsSubsetOf(total_)) return false;
  for (const auto& [name, milli] : shape.milli()) {
    if (!IsDeviceResource(name)) continue;
    auto cap = capacity_.find(name);
    if (cap == capacity_.end()) return false;
    if (!Pick(name, cap->second, milli, DevicePolicy::kPack)) return false;
  }
  return true;
}

std::optional<Allocation> ResourcePool::Allocate(const ResourceSet& shape, DevicePolicy policy) {
  return AllocateWithin(shape, policy, {});
}

std::optional<Allocation> ResourcePool::AllocateWithin(
    const ResourceSet& shape, DevicePolicy policy,
    const std::map<std::string, std::vector<int>>& allowed) {
  if (!shape.IsSubsetOf(available_)) return std::nullopt;
  Allocation alloc;
  alloc.amounts = shape;
  for (const auto& [name, milli] : shape.milli()) {
    if (!IsDeviceResource(name)) continue;
    auto f = free_.find(name);
    if (f == free_.end()) return std::nullopt;
    auto a = allowed.find(name);
    auto picked = Pick(name, f->second, milli, policy,
                       a == allowed.end() || milli < kMilli ? nullptr : &a->second);
    if (!picked) return std::nullopt;
    alloc.devices.insert(alloc.devices.end(), picked->begin(), picked->end());
  }
  available_.Subtract(shape);
  for (const DeviceShare& d : alloc.devices) free_[d.resource][d.index] -= d.milli;
  return alloc;
}

std::optional<std::vector<Allocation>> ResourcePool::AllocateAll(
    const std::vector<ResourceSet>& shapes, DevicePolicy policy, bool require_nvlink) {
  // The whole devices of all shapes, chosen together.
  std::map<std::string, std::vector<int>> joint;
  for (const auto& [name, free] : free_) {
    int64_t need = 0;
    for (const ResourceSet& s : shapes) {
      int64_t m = s.Get(name);
      if (m >= kMilli) need += m / kMilli;
    }
    if (need == 0) continue;
    auto set = Pick(name, free, need * kMilli, policy, nullptr, require_nvlink);
    if (!set) return std::nullopt;
    for (const DeviceShare& d : *set) joint[name].push_back(d.index);
  }
  std::vector<Allocation> taken;
  for (const ResourceSet& s : shapes) {
    auto a = AllocateWithin(s, policy, joint);
    if (!a) {
      for (const Allocation& t : taken) Free(t);
      return std::nullopt;
    }
    taken.push_back(std::move(*a));
  }
  return taken;
}

void ResourcePool::Free(const Allocation& alloc) {
  available_.Add(alloc.amounts);
  for (const DeviceShare& d : alloc.devices) free_[d.resource][d.index] += d.milli;
}

}  // namespace prism

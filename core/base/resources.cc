#include "base/resources.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

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
    char buf[64];
    if (amount % kMilli == 0) {
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(amount / kMilli));
    } else {
      std::snprintf(buf, sizeof(buf), "%.3f", static_cast<double>(amount) / kMilli);
    }
    out += name + "=" + buf;
  }
  return out.empty() ? "{}" : out;
}

bool IsDeviceResource(const std::string& name) { return name == kGpu; }

Status CheckRequestShape(const ResourceSet& shape) {
  for (const auto& [name, milli] : shape.milli()) {
    if (IsDeviceResource(name) && milli > kMilli && milli % kMilli != 0) {
      return Status::InvalidArgument(shape.Only(name).ToString() + ": an amount of " + name +
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
      return Status::InvalidArgument("a node has whole " + name + "s, not " + totals.Only(name).ToString());
    }
    if (milli / kMilli > 4096) return Status::InvalidArgument("more than 4096 " + name + "s on one node");
    for (int i = 0; i < static_cast<int>(milli / kMilli); ++i) {
      pool.capacity_[name][i] = kMilli;
      pool.free_[name][i] = kMilli;
    }
  }
  return pool;
}

ResourcePool ResourcePool::FromAllocation(const Allocation& alloc) {
  ResourcePool pool;
  pool.total_ = alloc.amounts;
  pool.available_ = alloc.amounts;
  for (const DeviceShare& d : alloc.devices) {
    pool.capacity_[d.resource][d.index] += d.milli;
    pool.free_[d.resource][d.index] += d.milli;
  }
  return pool;
}

const std::map<int, int64_t>& ResourcePool::Instances(const std::string& resource) const {
  static const std::map<int, int64_t> kNone;
  auto it = free_.find(resource);
  return it == free_.end() ? kNone : it->second;
}

std::optional<std::vector<DeviceShare>> ResourcePool::Pick(const std::string& resource,
                                                           const std::map<int, int64_t>& free,
                                                           const std::map<int, int64_t>& capacity,
                                                           int64_t milli, DevicePolicy policy) {
  std::vector<DeviceShare> out;
  if (milli < kMilli) {
    // A share of one instance.
    const std::pair<const int, int64_t>* best = nullptr;
    for (const auto& entry : free) {
      if (entry.second < milli) continue;
      bool better = best == nullptr ||
                    (policy == DevicePolicy::kPack ? entry.second < best->second : entry.second > best->second);
      if (better) best = &entry;
    }
    if (best == nullptr) return std::nullopt;
    out.push_back(DeviceShare{resource, best->first, milli});
    return out;
  }
  // Whole instances, untouched ones only.
  int64_t need = milli / kMilli;
  for (const auto& [index, f] : free) {
    if (static_cast<int64_t>(out.size()) == need) break;
    if (f == kMilli && capacity.at(index) == kMilli) out.push_back(DeviceShare{resource, index, kMilli});
  }
  if (static_cast<int64_t>(out.size()) < need) return std::nullopt;
  return out;
}

bool ResourcePool::CanEverFit(const ResourceSet& shape) const {
  if (!shape.IsSubsetOf(total_)) return false;
  for (const auto& [name, milli] : shape.milli()) {
    if (!IsDeviceResource(name)) continue;
    auto cap = capacity_.find(name);
    if (cap == capacity_.end()) return false;
    if (!Pick(name, cap->second, cap->second, milli, DevicePolicy::kPack)) return false;
  }
  return true;
}

std::optional<Allocation> ResourcePool::Allocate(const ResourceSet& shape, DevicePolicy policy) {
  if (!shape.IsSubsetOf(available_)) return std::nullopt;
  Allocation alloc;
  alloc.amounts = shape;
  for (const auto& [name, milli] : shape.milli()) {
    if (!IsDeviceResource(name)) continue;
    auto f = free_.find(name);
    if (f == free_.end()) return std::nullopt;
    auto picked = Pick(name, f->second, capacity_.at(name), milli, policy);
    if (!picked) return std::nullopt;
    alloc.devices.insert(alloc.devices.end(), picked->begin(), picked->end());
  }
  available_.Subtract(shape);
  for (const DeviceShare& d : alloc.devices) free_[d.resource][d.index] -= d.milli;
  return alloc;
}

void ResourcePool::Free(const Allocation& alloc) {
  available_.Add(alloc.amounts);
  for (const DeviceShare& d : alloc.devices) free_[d.resource][d.index] += d.milli;
}

}  // namespace prism

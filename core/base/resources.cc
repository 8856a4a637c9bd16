#include "base/resources.h"

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

}  // namespace prism

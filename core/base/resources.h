// Resource amounts (CPU, custom names) in fixed point, so that fractions add up exactly.
#pragma once

#include "base/status.h"

#include <cstdint>
#include <map>
#include <string>

namespace prism {

inline constexpr int64_t kMilli = 1000;
inline constexpr char kCpu[] = "CPU";
/// Bytes of memory, a resource like any other: tasks and actors that say how much they need are
/// placed only where that much is unreserved.
inline constexpr char kMemory[] = "memory";

/// A set of named non-negative amounts, in thousandths of a unit. Zero entries are dropped.
class ResourceSet {
 public:
  ResourceSet() = default;
  /// Rejects negative, non-finite or absurd amounts and empty names.
  static Result<ResourceSet> FromUnits(const std::map<std::string, double>& units);
  static Result<ResourceSet> FromMilli(const std::map<std::string, int64_t>& milli);

  const std::map<std::string, int64_t>& milli() const { return milli_; }
  int64_t Get(const std::string& name) const;
  bool empty() const { return milli_.empty(); }
  /// Every amount here is <= the same amount in `other`.
  bool IsSubsetOf(const ResourceSet& other) const;
  void Add(const ResourceSet& other);
  void Subtract(const ResourceSet& other);  // caller checked IsSubsetOf
  /// Subtracts even below zero (a worker that unblocks takes its CPU back on a full node).
  void Overdraw(const ResourceSet& other);
  /// Only the entry `name` (empty if absent).
  ResourceSet Only(const std::string& name) const;
  /// "CPU=1,gpu=0.5": a stable text form, used as a scheduling key and in messages.
  std::string ToString() const;
  bool operator==(const ResourceSet& o) const { return milli_ == o.milli_; }

 private:
  std::map<std::string, int64_t> milli_;
};

}  // namespace prism

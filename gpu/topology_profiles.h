// The shipped topology profiles (gpu/topologies/*.json), compiled in.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace prism::gpu::internal {
/// (name, JSON text) of each shipped profile.
const std::vector<std::pair<std::string, std::string>>& ShippedProfiles();
}  // namespace prism::gpu::internal

// The parts of a request that several services read the same way: a resource shape and the
// environment variables of a worker, from their wire forms, checked.
#pragma once

#include <map>
#include <string>

#include "base/resources.h"
#include "base/status.h"
#include "prism.pb.h"

namespace prism {

/// A resource shape from its wire form; a resource named twice is an error.
Result<ResourceSet> ShapeFromProto(
    const google::protobuf::RepeatedPtrField<rpc::ResourceAmount>& rs);

/// Environment variables from a request, checked (no empty names, no '=' or NUL, none of
/// prism's own PRISM_* variables), and the key that names that environment (equal
/// environments, equal keys).
Status EnvFromProto(const google::protobuf::RepeatedPtrField<rpc::EnvVar>& vars,
                    std::map<std::string, std::string>* env, std::string* key);

}  // namespace prism

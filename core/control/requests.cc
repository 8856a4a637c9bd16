#include "control/requests.h"

namespace prism {

Result<ResourceSet> ShapeFromProto(
    const google::protobuf::RepeatedPtrField<rpc::ResourceAmount>& rs) {
  std::map<std::string, int64_t> milli;
  for (const auto& r : rs) {
    if (milli.count(r.name()) > 0) {
      return Status::InvalidArgument("resource '" + r.name() + "' appears twice");
    }
    milli[r.name()] = r.milli();
  }
  return ResourceSet::FromMilli(milli);
}

Status EnvFromProto(const google::protobuf::RepeatedPtrField<rpc::EnvVar>& vars,
                    std::map<std::string, std::string>* env, std::string* key) {
  for (const auto& v : vars) {
    if (v.name().empty() || v.name().find('=') != std::string::npos ||
        v.name().find('\0') != std::string::npos || v.value().find('\0') != std::string::npos ||
        v.name().rfind("PRISM_", 0) == 0) {
      return Status::InvalidArgument("invalid environment variable '" + v.name() + "'");
    }
    (*env)[v.name()] = v.value();
  }
  key->clear();
  for (const auto& [k, v] : *env) *key += k + "=" + v + std::string(1, '\0');
  return Status::OK();
}

}  // namespace prism

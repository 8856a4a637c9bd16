// ObjectRef<T>: a future for a value that a task returns or that Put stored.
#pragma once

#include <prism/internal/runtime_api.h>
#include <prism/serialization.h>

#include <memory>
#include <string>
#include <utility>

namespace prism {

/// A reference to an immutable object of type T. Copies are cheap and share one reference;
/// the value lives as long as some ObjectRef to it does. Thread-safe to copy and destroy.
template <typename T>
class ObjectRef {
 public:
  using ValueType = T;
  ObjectRef() = default;
  explicit ObjectRef(internal::RefPtr handle) : handle_(std::move(handle)) {}

  /// The object's id (nil for a default-constructed ref).
  ObjectId id() const { return handle_ ? handle_->id() : ObjectId(); }
  bool valid() const { return handle_ != nullptr; }
  const internal::RefPtr& handle() const { return handle_; }

  bool operator==(const ObjectRef& o) const { return id() == o.id(); }

 private:
  internal::RefPtr handle_;
};

}  // namespace prism

// An ObjectRef nested inside a value travels as a reference: [id, owner socket, owner worker
// id, owner node id]. The receiver can Get it; it asks the owner for the value.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <typename T>
  struct pack<prism::ObjectRef<T>> {
    template <typename Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& o,
                                        const prism::ObjectRef<T>& ref) const {
      if (!ref.valid()) throw prism::InvalidArgumentError("cannot send an empty ObjectRef");
      if (prism::internal::tl_nested_refs != nullptr) {
        prism::internal::tl_nested_refs->push_back(ref.handle());
      }
      const auto& owner = ref.handle()->owner();
      o.pack_array(5);
      std::string id = ref.id().Binary();
      o.pack_bin(static_cast<uint32_t>(id.size()));
      o.pack_bin_body(id.data(), static_cast<uint32_t>(id.size()));
      o.pack(owner.socket_path);
      o.pack_bin(static_cast<uint32_t>(owner.worker_id.size()));
      o.pack_bin_body(owner.worker_id.data(), static_cast<uint32_t>(owner.worker_id.size()));
      o.pack_bin(static_cast<uint32_t>(owner.node_id.size()));
      o.pack_bin_body(owner.node_id.data(), static_cast<uint32_t>(owner.node_id.size()));
      o.pack(owner.node_address);
      return o;
    }
  };
  template <typename T>
  struct convert<prism::ObjectRef<T>> {
    const msgpack::object& operator()(const msgpack::object& o, prism::ObjectRef<T>& ref) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 5) throw msgpack::type_error();
      const msgpack::object* a = o.via.array.ptr;
      auto bin = [](const msgpack::object& x) {
        if (x.type != msgpack::type::BIN) throw msgpack::type_error();
        return std::string(x.via.bin.ptr, x.via.bin.size);
      };
      std::string id = bin(a[0]);
      if (!prism::ObjectId::IsValidBinary(id)) throw msgpack::type_error();
      prism::internal::OwnerAddress owner{a[1].as<std::string>(), bin(a[2]), bin(a[3]),
                                          a[4].as<std::string>()};
      ref = prism::ObjectRef<T>(
          prism::internal::MakeRef(prism::ObjectId::FromBinary(id), std::move(owner)));
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

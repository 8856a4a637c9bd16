// prism._prism: objects: refs, put, get, wait, cancel, the key-value store, the object store's
// buffers.
#include <absl/container/flat_hash_set.h>

#include "binding.h"

namespace py = pybind11;

namespace prism::binding {

void BindObjects(py::module_& m) {
  py::class_<Pinned>(m, "Pinned", py::buffer_protocol())
      .def_buffer([](Pinned& p) {
        return py::buffer_info(const_cast<char*>(p.bytes.data()), 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(p.bytes.size())}, {1}, /*readonly=*/true);
      })
      .def("__len__", [](const Pinned& p) { return p.bytes.size(); });

  m.def("in_object_store", [](uintptr_t address, size_t size) {
    return internal::InObjectStore(reinterpret_cast<const void*>(address), size);
  });

  py::class_<internal::RefHandle, internal::RefPtr>(m, "RefHandle")
      .def("binary", [](const internal::RefHandle& h) { return py::bytes(h.id().Binary()); })
      .def("hex", [](const internal::RefHandle& h) { return h.id().Hex(); })
      .def("owner", [](const internal::RefHandle& h) {
        const auto& o = h.owner();
        return py::make_tuple(o.socket_path, py::bytes(o.worker_id), py::bytes(o.node_id),
                              o.node_address);
      });

  m.def("put", [](size_t size, const py::list& parts, const py::list& nested) {
    internal::EncodedValue v = PartsValue(size, parts, Handles(nested));
    ReleaseGil release;
    return internal::Put(v);
  });

  m.def("make_ref", [](const py::bytes& id, const std::string& socket, const py::bytes& worker,
                       const py::bytes& node, const std::string& node_address) {
    std::string bin(id);
    if (!ObjectId::IsValidBinary(bin)) throw InvalidArgumentError("not an object id");
    return internal::MakeRef(
        ObjectId::FromBinary(bin),
        internal::OwnerAddress{socket, std::string(worker), std::string(node), node_address});
  });

  // The encoded values of `refs` (bytes), in order; raises the first error.
  m.def("get", [](const std::vector<RefPtr>& refs, int64_t timeout_ms) {
    std::vector<internal::EncodedView> views;
    {
      ReleaseGil release;
      views = internal::GetEncoded(Raw(refs), timeout_ms);
    }
    py::list out;
    for (auto& v : views) out.append(Pinned{v.bytes, std::move(v.keep)});
    return out;
  });

  // Pushes `token` to take_ready() once `ref` is ready.
  m.def("when_ready", [](const RefPtr& ref, uint64_t token) {
    if (!ref) throw InvalidArgumentError("an empty ObjectRef");
    std::shared_ptr<ProcessRuntime> core = CurrentRuntime();
    ReleaseGil release;
    core->WhenReady(*ref, [token] { Ready().Push(token); });
  });
  m.def("take_ready", [] {
    ReleaseGil release;
    return Ready().Take();
  });
  m.def("rebuild_lost", [](const RefPtr& ref) {
    ReleaseGil release;
    return internal::RebuildLost(*ref);
  });

  m.def("wait", [](const std::vector<RefPtr>& refs, size_t num_returns, int64_t timeout_ms) {
    ReleaseGil release;
    std::vector<const RefHandle*> raw = Raw(refs);
    // (Open addressing: a node-based set allocated and freed a node per ref, a fifth of a wait
    // of 1,000 ready refs.)
    absl::flat_hash_set<ObjectId> seen;
    seen.reserve(raw.size());
    for (const RefHandle* r : raw) {
      if (!seen.insert(r->id()).second)
        throw InvalidArgumentError("wait() was given the same ObjectRef twice");
    }
    std::vector<bool> ready = internal::WaitReady(raw, num_returns, timeout_ms);
    size_t kept = 0;
    for (size_t i = 0; i < ready.size(); ++i) {  // the first num_returns ready ones, in order
      if (ready[i] && kept++ >= num_returns) ready[i] = false;
    }
    return ready;
  });

  m.def("cancel", [](const RefPtr& ref, bool force) {
    if (!ref) throw InvalidArgumentError("an empty ObjectRef");
    ReleaseGil release;
    internal::CancelTask(*ref, force);
  });

  m.def("kv_put",
        [](const std::string& ns, const py::bytes& key, const py::bytes& value, bool overwrite) {
          std::string k(key), v(value);
          ReleaseGil release;
          return CurrentRuntime()->KvPut(ns, k, v, overwrite);
        });
  m.def("kv_get", [](const std::string& ns, const py::bytes& key) -> py::object {
    std::string k(key);
    std::optional<std::string> v;
    {
      ReleaseGil release;
      v = CurrentRuntime()->KvGet(ns, k);
    }
    if (!v) return py::none();
    return py::bytes(*v);
  });
}

}  // namespace prism::binding

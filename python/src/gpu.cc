// prism._prism: GPU tensors (DLPack), the topology, and collectives.
#include "binding.h"

namespace py = pybind11;

namespace prism::binding {

void BindGpu(py::module_& m) {
  m.def("topology", [](const std::string& profile, bool json) {
    gpu::Topology t;
    if (profile.empty()) {
      auto found = gpu::Topology::Discover();
      if (!found.ok()) throw RuntimeError("no GPUs found here (" + found.status().message() + "); name a profile");
      t = std::move(found).value();
    } else {
      auto loaded = gpu::Topology::Load(profile);
      if (!loaded.ok()) throw InvalidArgumentError(loaded.status().message());
      t = std::move(loaded).value();
    }
    return json ? t.ToJson() : t.Matrix();
  });
  m.def("topology_profiles", [] { return gpu::Topology::ProfileNames(); });

  // Device tensors (gpu::Tensor values written by C++ GPU tasks): shape, dtype, DLPack out.
  py::class_<gpu::Tensor>(m, "Tensor")
      .def_property_readonly("shape", [](const gpu::Tensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("dtype", [](const gpu::Tensor& t) { return std::string(gpu::DTypeName(t.dtype())); })
      .def_property_readonly("nbytes", &gpu::Tensor::bytes)
      .def("__dlpack_device__",
           [](const gpu::Tensor& t) {
             auto backend = CurrentCoreWorker()->gpu_tasks().backend();
             bool host = backend.ok() && (*backend)->name() == "sim";
             return py::make_tuple(host ? static_cast<int>(kDLCPU) : static_cast<int>(kDLCUDA), host ? 0 : t.device());
           })
      .def(
          "__dlpack__",
          [](const gpu::Tensor& t, py::object stream, py::object max_version, py::kwargs) {
            bool versioned = false;
            if (!max_version.is_none()) versioned = max_version.cast<py::tuple>()[0].cast<int>() >= 1;
            return DLPackCapsule(t, versioned, stream);
          },
          py::arg("stream") = py::none(), py::arg("max_version") = py::none())
      .def_property_readonly("device", &gpu::Tensor::device)
      .def_property_readonly("data_ptr", [](const gpu::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); })
      .def_static("from_dlpack", &TensorFromDLPack, py::arg("tensor"),
                  "A framework's tensor (anything with __dlpack__) as a prism tensor: the same memory when "
                  "it is prism's, else a copy in prism's device memory")
      .def("__repr__", [](const gpu::Tensor& t) {
        std::string shape;
        for (int64_t d : t.shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        return "prism.gpu.Tensor(shape=(" + shape + "), dtype=" + std::string(gpu::DTypeName(t.dtype())) +
               ", device=" + std::to_string(t.device()) + ")";
      });
  m.def("pack_tensor", [](const gpu::Tensor& t) {
    std::string d;
    {
      py::gil_scoped_release release;
      d = gpu::internal::PackTensor(t);
    }
    return py::bytes(d);
  });
  m.def("unpack_tensor", [](py::bytes descriptor) {
    std::string d = descriptor;
    py::gil_scoped_release release;
    return gpu::internal::UnpackTensor(d);
  });

  // Collectives (prism/collective.py): groups over actors, operations on NumPy-like buffers and
  // prism.gpu.Tensor.
  py::class_<collective::Group, std::unique_ptr<collective::Group, py::nodelete>>(m, "CollectiveGroup")
      .def_property_readonly("name", &collective::Group::name)
      .def_property_readonly("rank", &collective::Group::rank)
      .def_property_readonly("size", &collective::Group::size)
      .def_property_readonly("backend", [](const collective::Group& g) { return collective::BackendName(g.backend()); })
      .def("allreduce", [](collective::Group& g, py::object x, const std::string& op) {
        CollectiveBuffer b(x, true);
        py::gil_scoped_release release;
        g.AllReduce(b.data, b.data, b.count, b.dtype, ParseReduceOp(op), b.stream);
        b.Done();
      })
      .def("allgather", [](collective::Group& g, py::object out, py::object x) {
        CollectiveBuffer o(out, true), i(x, false);
        CheckSameDType(o, i);
        if (o.count != i.count * static_cast<size_t>(g.size())) {
          throw py::value_error("allgather's output must hold size * len(input) elements");
        }
        py::gil_scoped_release release;
        g.AllGather(i.data, o.data, i.count, i.dtype, o.stream ? o.stream : i.stream);
        o.Done();
        i.Done();
      })
      .def("reduce_scatter", [](collective::Group& g, py::object out, py::object x, const std::string& op) {
        CollectiveBuffer o(out, true), i(x, false);
        CheckSameDType(o, i);
        if (i.count != o.count * static_cast<size_t>(g.size())) {
          throw py::value_error("reduce_scatter's input must hold size * len(output) elements");
        }
        py::gil_scoped_release release;
        g.ReduceScatter(i.data, o.data, o.count, o.dtype, ParseReduceOp(op), o.stream ? o.stream : i.stream);
        o.Done();
        i.Done();
      })
      .def("broadcast", [](collective::Group& g, py::object x, int root) {
        CollectiveBuffer b(x, true);
        py::gil_scoped_release release;
        g.Broadcast(b.data, b.count, b.dtype, root, b.stream);
        b.Done();
      })
      .def("reduce", [](collective::Group& g, py::object x, int root, const std::string& op) {
        CollectiveBuffer b(x, true);
        py::gil_scoped_release release;
        g.Reduce(b.data, b.data, b.count, b.dtype, ParseReduceOp(op), root, b.stream);
        b.Done();
      })
      .def("send", [](collective::Group& g, py::object x, int peer) {
        CollectiveBuffer b(x, false);
        py::gil_scoped_release release;
        g.Send(b.data, b.count, b.dtype, peer, b.stream);
        b.Done();
      })
      .def("recv", [](collective::Group& g, py::object x, int peer) {
        CollectiveBuffer b(x, true);
        py::gil_scoped_release release;
        g.Recv(b.data, b.count, b.dtype, peer, b.stream);
        b.Done();
      })
      .def("send_recv", [](collective::Group& g, const std::vector<std::tuple<std::string, py::object, int>>& ops) {
        std::vector<std::unique_ptr<CollectiveBuffer>> buffers;
        std::vector<collective::P2POp> batch;
        gpu::Stream* stream = nullptr;
        for (const auto& [kind, tensor, peer] : ops) {
          if (kind != "send" && kind != "recv") throw py::value_error("a batch's operation is 'send' or 'recv', not '" + kind + "'");
          buffers.push_back(std::make_unique<CollectiveBuffer>(tensor, kind == "recv"));
          const CollectiveBuffer& b = *buffers.back();
          batch.push_back(kind == "send" ? collective::P2POp::Send(b.data, b.count, b.dtype, peer)
                                         : collective::P2POp::Recv(b.data, b.count, b.dtype, peer));
          if (stream != nullptr && b.stream != nullptr && b.stream != stream) {
            throw py::value_error("a batch's tensors must be on one stream (or host memory)");
          }
          if (stream == nullptr) stream = b.stream;
        }
        py::gil_scoped_release release;
        g.SendRecv(batch, stream);
        for (auto& b : buffers) b->Done();
      })
      .def("barrier", [](collective::Group& g) {
        py::gil_scoped_release release;
        g.Barrier();
      });
  m.def("collective_declare", [](const std::vector<py::bytes>& actors, const std::string& backend,
                                 const std::string& name, double timeout_s, const std::string& order) {
    if (order != "given" && order != "topology") {
      throw InvalidArgumentError("a group's rank order is 'given' or 'topology', not '" + order + "'");
    }
    std::vector<ActorId> ids;
    for (const auto& a : actors) {
      std::string id = a;
      if (!ActorId::IsValidBinary(id)) throw InvalidArgumentError("not an actor id");
      ids.push_back(ActorId::FromBinary(id));
    }
    collective::GroupOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    options.order = order == "topology" ? collective::RankOrder::kTopology : collective::RankOrder::kAsGiven;
    py::gil_scoped_release release;
    collective::internal::DeclareGroup(ids, ParseBackend(backend), name, options);
  });
  m.def("collective_split", [](const std::string& parent, const std::string& name, int color, int key) {
    py::gil_scoped_release release;
    return collective::SplitGroup(parent, name, color, key);
  }, py::return_value_policy::reference);
  m.def("collective_get", [](const std::string& name) {
    py::gil_scoped_release release;
    return &collective::GetGroup(name);
  }, py::return_value_policy::reference);
  m.def("collective_init", [](const std::string& name, int world_size, int rank, const std::string& backend,
                              double timeout_s) {
    collective::GroupOptions options;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    collective::Backend b = ParseBackend(backend);
    py::gil_scoped_release release;
    return &collective::InitGroup(name, world_size, rank, b, options);
  }, py::return_value_policy::reference);
  m.def("collective_destroy", [](const std::string& name) {
    py::gil_scoped_release release;
    collective::DestroyGroup(name);
  });
  m.def("collective_in_group", [](const std::string& name) { return collective::InGroup(name); });
  m.def("collective_env", [] {  // what joining set in the C environment (Python's os.environ is a copy)
    py::dict out;
    for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
      if (const char* v = std::getenv(k)) out[k] = v;
    }
    return out;
  });

}

}  // namespace prism::binding

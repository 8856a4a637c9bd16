// prism._prism: GPU tensors (DLPack), the topology, and collectives.
#include "binding.h"

namespace py = pybind11;

namespace prism::binding {
namespace {

// A prism tensor handed to a DLPack consumer (numpy, PyTorch, CuPy): the versioned capsule when
// the consumer asks for DLPack >= 1.0, else the legacy one (numpy before 2.1 asks for that).
// `stream` is DLPack's: on cuda the consumer's stream (None: the legacy default stream; -1: the
// consumer orders itself), which is made to wait for the tensor's work on an event, with no host
// synchronization; sim devices are host memory, read by host code, so the work is waited for.
py::capsule DLPackCapsule(const gpu::Tensor& t, bool versioned, const py::object& stream) {
  Result<gpu::Backend*> backend = Status::Internal("unset");
  {
    ReleaseGil release;  // (it takes the GPU layer's lock)
    backend = CurrentRuntime()->GpuBackend();
  }
  if (!backend.ok()) throw RuntimeError(backend.status().message());
  gpu::Backend& b = **backend;
  if (b.name() == "cuda") {
    int64_t handle = stream.is_none() ? 1 : stream.cast<int64_t>();
    if (handle != -1) {
      ReleaseGil release;
      auto consumer = b.WrapStream(t.device(), static_cast<uintptr_t>(handle));
      auto ready = b.CreateEvent(t.device());
      Status st = !consumer.ok() ? consumer.status()
                  : !ready.ok()  ? ready.status()
                                 : (*ready)->Record(*t.stream());
      if (st.ok()) st = (*consumer)->Wait(**ready);
      if (!st.ok())
        throw RuntimeError("cannot order the consumer's stream after the tensor's work: " +
                           st.ToString());
    }
  } else {
    ReleaseGil release;
    if (Status st = t.stream()->Synchronize(); !st.ok()) throw RuntimeError(st.ToString());
  }
  auto exported = t.ToDLPack(b);
  if (!exported.ok()) throw RuntimeError(exported.status().ToString());
  DLManagedTensorVersioned* v = *exported;
  if (versioned) {
    return py::capsule(v, "dltensor_versioned", [](PyObject* cap) {
      if (PyCapsule_IsValid(cap, "dltensor_versioned")) {  // not taken by a consumer
        auto* m =
            static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
        if (m->deleter) m->deleter(m);
      }
    });
  }
  auto* legacy =
      new DLManagedTensor{v->dl_tensor, v, [](DLManagedTensor* self) {
                            auto* inner = static_cast<DLManagedTensorVersioned*>(self->manager_ctx);
                            if (inner->deleter) inner->deleter(inner);
                            delete self;
                          }};
  return py::capsule(legacy, "dltensor", [](PyObject* cap) {
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (m->deleter) m->deleter(m);
    }
  });
}

// A producer's DLPack capsule (versioned, or legacy wrapped as versioned), marked as used.
DLManagedTensorVersioned* TakeCapsule(const py::object& cap) {
  PyObject* p = cap.ptr();
  if (PyCapsule_IsValid(p, "dltensor_versioned")) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(p, "dltensor_versioned"));
    PyCapsule_SetName(p, "used_dltensor_versioned");
    return m;
  }
  if (PyCapsule_IsValid(p, "dltensor")) {
    auto* legacy = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(p, "dltensor"));
    PyCapsule_SetName(p, "used_dltensor");
    auto* v = new DLManagedTensorVersioned{};
    v->version = {1, 0};
    v->manager_ctx = legacy;
    v->deleter = [](DLManagedTensorVersioned* self) {
      auto* l = static_cast<DLManagedTensor*>(self->manager_ctx);
      if (l->deleter) l->deleter(l);
      delete self;
    };
    v->dl_tensor = legacy->dl_tensor;
    return v;
  }
  throw py::type_error("__dlpack__ did not return a DLPack capsule");
}

// A producer's tensor through DLPack, its work ordered before `stream_arg` (DLPack's `stream`:
// None for host memory): the versioned capsule, or the legacy one from a producer before 1.0.
DLManagedTensorVersioned* ExportFrom(const py::object& obj, const py::object& stream_arg) {
  py::object cap;
  try {
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg,
                                 py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;  // a producer before DLPack 1.0 takes no max_version
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg);
  }
  return TakeCapsule(cap);
}

// Device memory and a stream of this process on `device`: the running GPU task's when it holds
// the device, else those prism keeps for work outside tasks.
std::pair<gpu::MemoryResource*, gpu::Stream*> DeviceResources(ProcessRuntime& runtime, int device) {
  gpu::Context* ctx = runtime.GpuContextOrNull();
  if (ctx != nullptr &&
      std::find(ctx->devices().begin(), ctx->devices().end(), device) != ctx->devices().end()) {
    return {&ctx->memory(device), &ctx->stream(device)};
  }
  Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> outside = Status::Internal("unset");
  {
    ReleaseGil release;  // (it takes the GPU layer's lock)
    outside = runtime.GpuOutsideTasks(device);
  }
  if (!outside.ok()) throw RuntimeError(outside.status().message());
  return *outside;
}

// A framework's tensor (PyTorch, CuPy, NumPy: anything with __dlpack__) as a prism tensor: its
// memory when it is prism's (a view of a prism tensor), else a copy into prism's memory of the
// GPU the task holds (or the tensor's own GPU). The producer orders its work before the copy
// through DLPack's stream argument (this process's stream for it).
gpu::Tensor TensorFromDLPack(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__")) {
    throw py::type_error(std::string(py::str(obj.get_type().attr("__name__"))) +
                         " does not support DLPack (it has no __dlpack__ and __dlpack_device__)");
  }
  auto where = obj.attr("__dlpack_device__")().cast<py::tuple>();
  int type = where[0].cast<int>(), id = where[1].cast<int>();
  std::shared_ptr<ProcessRuntime> runtime = CurrentRuntime();
  Result<gpu::Backend*> backend = Status::Internal("unset");
  {
    ReleaseGil release;  // (it takes the GPU layer's lock)
    backend = runtime->GpuBackend();
  }
  if (!backend.ok())
    throw RuntimeError("a prism tensor needs a GPU backend: " + backend.status().message());
  bool sim = (*backend)->name() == "sim";
  if (type != kDLCPU && type != kDLCUDA && type != kDLCUDAHost) {
    throw py::value_error("DLPack device type " + std::to_string(type) +
                          ": prism takes CUDA and host memory");
  }
  if (type == kDLCUDA && sim) {
    throw py::value_error(
        "a CUDA tensor, but this process's GPU backend is sim (its devices are host memory)");
  }
  gpu::Context* ctx = runtime->GpuContextOrNull();
  int device = type == kDLCUDA ? id : (ctx != nullptr ? ctx->device() : 0);
  auto [memory, stream] = DeviceResources(*runtime, device);
  py::object stream_arg = py::none();  // host memory: no stream
  if (type == kDLCUDA) stream_arg = py::int_(reinterpret_cast<uintptr_t>(stream->native()));
  DLManagedTensorVersioned* managed = ExportFrom(obj, stream_arg);
  Result<gpu::Tensor> t = Status::Internal("unset");
  {
    ReleaseGil release;
    t = gpu::Tensor::FromDLPack(managed, **backend, *memory, *stream);
  }
  if (!t.ok()) {
    if (t.status().code() == StatusCode::kInvalidArgument)
      throw py::value_error(t.status().message());
    throw RuntimeError(t.status().ToString());
  }
  return std::move(t).value();
}

collective::Backend ParseBackend(const std::string& name) {
  if (name == "gloo") return collective::Backend::kGloo;
  if (name == "nccl") return collective::Backend::kNccl;
  throw InvalidArgumentError("a collective backend is 'gloo' or 'nccl', not '" + name + "'");
}

collective::ReduceOp ParseReduceOp(const std::string& op) {
  if (op == "sum") return collective::ReduceOp::kSum;
  if (op == "prod" || op == "product") return collective::ReduceOp::kProd;
  if (op == "min") return collective::ReduceOp::kMin;
  if (op == "max") return collective::ReduceOp::kMax;
  if (op == "avg" || op == "mean") return collective::ReduceOp::kAvg;
  throw InvalidArgumentError("a reduce op is sum, prod, min, max or avg, not '" + op + "'");
}

// A collective's buffer: a prism.gpu.Tensor (its memory and stream), or anything with the buffer
// protocol (a NumPy array: host memory), C-contiguous, of a dtype collectives take.
struct CollectiveBuffer {
  void* data = nullptr;
  size_t count = 0;
  collective::DType dtype = collective::DType::kFloat32;
  gpu::Stream* stream = nullptr;
  py::buffer_info info;  // keeps a buffer's view while the operation runs

  // A framework's tensor taken through DLPack (a PyTorch tensor, say): its capsule, released after
  // the operation; a CUDA one's operation is waited for before it goes back (`sync_after`).
  std::unique_ptr<DLManagedTensorVersioned, void (*)(DLManagedTensorVersioned*)> dlpack{
      nullptr, [](DLManagedTensorVersioned* m) {
        if (m->deleter) m->deleter(m);
      }};
  bool sync_after = false;

  // After the operation (GIL released): a framework's CUDA tensor gets its memory back once done.
  void Done() {
    if (!sync_after || stream == nullptr) return;
    if (Status st = stream->Synchronize(); !st.ok()) throw RuntimeError(st.ToString());
  }

  void FromDLPack(const py::object& x, bool writable) {
    auto where = x.attr("__dlpack_device__")().cast<py::tuple>();
    int type = where[0].cast<int>(), id = where[1].cast<int>();
    py::object stream_arg = py::none();
    if (type == kDLCUDA) {
      // The producer orders its work before a stream of ours; the operation runs there and is
      // waited for (the framework's later work is not ordered after ours otherwise).
      stream = DeviceResources(*CurrentRuntime(), id).second;
      stream_arg = py::int_(reinterpret_cast<uintptr_t>(stream->native()));
      sync_after = true;
    } else if (type != kDLCPU && type != kDLCUDAHost) {
      throw py::value_error("DLPack device type " + std::to_string(type) +
                            ": collectives take CUDA and host memory");
    }
    dlpack.reset(ExportFrom(x, stream_arg));
    const DLTensor& t = dlpack->dl_tensor;
    if (writable && (dlpack->flags & DLPACK_FLAG_BITMASK_READ_ONLY)) {
      throw py::value_error("the tensor is read-only, and this collective writes into it");
    }
    int64_t expect = 1;
    count = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (t.strides != nullptr && t.shape[d] != 1 && t.strides[d] != expect) {
        throw py::value_error("a collective's tensor must be contiguous (call .contiguous())");
      }
      expect *= t.shape[d];
      count *= static_cast<size_t>(t.shape[d]);
    }
    if (t.dtype.lanes != 1) throw py::value_error("vector dtypes are not taken");
    if (t.dtype.code == kDLFloat && t.dtype.bits == 16) {
      dtype = collective::DType::kFloat16;
    } else if (t.dtype.code == kDLBfloat && t.dtype.bits == 16) {
      dtype = collective::DType::kBFloat16;
    } else if (t.dtype.code == kDLFloat && t.dtype.bits == 32) {
      dtype = collective::DType::kFloat32;
    } else if (t.dtype.code == kDLFloat && t.dtype.bits == 64) {
      dtype = collective::DType::kFloat64;
    } else if (t.dtype.code == kDLInt && t.dtype.bits == 32) {
      dtype = collective::DType::kInt32;
    } else if (t.dtype.code == kDLInt && t.dtype.bits == 64) {
      dtype = collective::DType::kInt64;
    } else {
      throw py::value_error(
          "collectives take float16, bfloat16, float32, float64, int32 and int64 tensors");
    }
    data = static_cast<uint8_t*>(t.data) + t.byte_offset;
  }

  CollectiveBuffer(const py::object& x, bool writable) {
    if (!py::isinstance<gpu::Tensor>(x) && !PyObject_CheckBuffer(x.ptr()) &&
        py::hasattr(x, "__dlpack__") && py::hasattr(x, "__dlpack_device__")) {
      FromDLPack(x, writable);
      return;
    }
    if (py::isinstance<gpu::Tensor>(x)) {
      const auto& t = x.cast<const gpu::Tensor&>();
      data = t.data();
      count = t.count();
      dtype = t.dtype();
      stream = t.stream();
      return;
    }
    if (!PyObject_CheckBuffer(x.ptr())) {
      throw py::type_error(
          "a collective takes a NumPy array (or another buffer) or a prism.gpu.Tensor, not " +
          std::string(py::str(x.get_type().attr("__name__"))));
    }
    info = x.cast<py::buffer>().request(writable);
    ssize_t expect = info.itemsize;
    for (ssize_t d = info.ndim; d-- > 0;) {
      if (info.shape[d] != 1 && info.strides[d] != expect) {
        throw py::value_error(
            "a collective's array must be C-contiguous (use numpy.ascontiguousarray)");
      }
      expect *= info.shape[d];
    }
    data = info.ptr;
    count = static_cast<size_t>(info.size);
    char f = info.format.empty() ? '?' : info.format.back();
    if (f == 'e') {
      dtype = collective::DType::kFloat16;
    } else if (f == 'f') {
      dtype = collective::DType::kFloat32;
    } else if (f == 'd') {
      dtype = collective::DType::kFloat64;
    } else if ((f == 'i' || f == 'l' || f == 'q') && info.itemsize == 4) {
      dtype = collective::DType::kInt32;
    } else if ((f == 'i' || f == 'l' || f == 'q') && info.itemsize == 8) {
      dtype = collective::DType::kInt64;
    } else {
      throw py::value_error(
          "collectives take float16, float32, float64, int32 and int64 arrays (and bfloat16 "
          "prism tensors), not format '" +
          info.format + "'");
    }
  }
};

void CheckSameDType(const CollectiveBuffer& a, const CollectiveBuffer& b) {
  if (a.dtype != b.dtype)
    throw py::value_error("the input and the output must have the same dtype");
}

}  // namespace

void BindGpu(py::module_& m) {
  m.def("topology", [](const std::string& profile, bool json) {
    gpu::Topology t;
    if (profile.empty()) {
      auto found = gpu::Topology::Discover();
      if (!found.ok())
        throw RuntimeError("no GPUs found here (" + found.status().message() + "); name a profile");
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
      .def_property_readonly("shape",
                             [](const gpu::Tensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly(
          "dtype", [](const gpu::Tensor& t) { return std::string(gpu::DTypeName(t.dtype())); })
      .def_property_readonly("nbytes", &gpu::Tensor::bytes)
      .def("__dlpack_device__",
           [](const gpu::Tensor& t) {
             auto backend = CurrentRuntime()->GpuBackend();
             bool host = backend.ok() && (*backend)->name() == "sim";
             return py::make_tuple(host ? static_cast<int>(kDLCPU) : static_cast<int>(kDLCUDA),
                                   host ? 0 : t.device());
           })
      .def(
          "__dlpack__",
          [](const gpu::Tensor& t, py::object stream, py::object max_version, py::kwargs) {
            bool versioned = false;
            if (!max_version.is_none())
              versioned = max_version.cast<py::tuple>()[0].cast<int>() >= 1;
            return DLPackCapsule(t, versioned, stream);
          },
          py::arg("stream") = py::none(), py::arg("max_version") = py::none())
      .def_property_readonly("device", &gpu::Tensor::device)
      .def_property_readonly(
          "data_ptr", [](const gpu::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); })
      .def_static(
          "from_dlpack", &TensorFromDLPack, py::arg("tensor"),
          "A framework's tensor (anything with __dlpack__) as a prism tensor: the same memory when "
          "it is prism's, else a copy in prism's device memory")
      .def("__repr__", [](const gpu::Tensor& t) {
        std::string shape;
        for (int64_t d : t.shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        return "prism.gpu.Tensor(shape=(" + shape +
               "), dtype=" + std::string(gpu::DTypeName(t.dtype())) +
               ", device=" + std::to_string(t.device()) + ")";
      });
  m.def("pack_tensor", [](const gpu::Tensor& t) {
    std::string d;
    {
      ReleaseGil release;
      d = gpu::internal::PackTensor(t);
    }
    return py::bytes(d);
  });
  m.def("unpack_tensor", [](py::bytes descriptor) {
    std::string d = descriptor;
    ReleaseGil release;
    return gpu::internal::UnpackTensor(d);
  });

  // Collectives (prism/collective.py): groups over actors, operations on NumPy-like buffers and
  // prism.gpu.Tensor.
  py::class_<collective::Group, std::unique_ptr<collective::Group, py::nodelete>>(m,
                                                                                  "CollectiveGroup")
      .def_property_readonly("name", &collective::Group::name)
      .def_property_readonly("rank", &collective::Group::rank)
      .def_property_readonly("size", &collective::Group::size)
      .def_property_readonly(
          "backend",
          [](const collective::Group& g) { return collective::BackendName(g.backend()); })
      .def("allreduce",
           [](collective::Group& g, py::object x, const std::string& op) {
             CollectiveBuffer b(x, true);
             ReleaseGil release;
             g.AllReduce(b.data, b.data, b.count, b.dtype, ParseReduceOp(op), b.stream);
             b.Done();
           })
      .def("allgather",
           [](collective::Group& g, py::object out, py::object x) {
             CollectiveBuffer o(out, true), i(x, false);
             CheckSameDType(o, i);
             if (o.count != i.count * static_cast<size_t>(g.size())) {
               throw py::value_error("allgather's output must hold size * len(input) elements");
             }
             ReleaseGil release;
             g.AllGather(i.data, o.data, i.count, i.dtype, o.stream ? o.stream : i.stream);
             o.Done();
             i.Done();
           })
      .def(
          "reduce_scatter",
          [](collective::Group& g, py::object out, py::object x, const std::string& op) {
            CollectiveBuffer o(out, true), i(x, false);
            CheckSameDType(o, i);
            if (i.count != o.count * static_cast<size_t>(g.size())) {
              throw py::value_error("reduce_scatter's input must hold size * len(output) elements");
            }
            ReleaseGil release;
            g.ReduceScatter(i.data, o.data, o.count, o.dtype, ParseReduceOp(op),
                            o.stream ? o.stream : i.stream);
            o.Done();
            i.Done();
          })
      .def("broadcast",
           [](collective::Group& g, py::object x, int root) {
             CollectiveBuffer b(x, true);
             ReleaseGil release;
             g.Broadcast(b.data, b.count, b.dtype, root, b.stream);
             b.Done();
           })
      .def("reduce",
           [](collective::Group& g, py::object x, int root, const std::string& op) {
             CollectiveBuffer b(x, true);
             ReleaseGil release;
             g.Reduce(b.data, b.data, b.count, b.dtype, ParseReduceOp(op), root, b.stream);
             b.Done();
           })
      .def("send",
           [](collective::Group& g, py::object x, int peer) {
             CollectiveBuffer b(x, false);
             ReleaseGil release;
             g.Send(b.data, b.count, b.dtype, peer, b.stream);
             b.Done();
           })
      .def("recv",
           [](collective::Group& g, py::object x, int peer) {
             CollectiveBuffer b(x, true);
             ReleaseGil release;
             g.Recv(b.data, b.count, b.dtype, peer, b.stream);
             b.Done();
           })
      .def("send_recv",
           [](collective::Group& g,
              const std::vector<std::tuple<std::string, py::object, int>>& ops) {
             std::vector<std::unique_ptr<CollectiveBuffer>> buffers;
             std::vector<collective::P2POp> batch;
             gpu::Stream* stream = nullptr;
             for (const auto& [kind, tensor, peer] : ops) {
               if (kind != "send" && kind != "recv")
                 throw py::value_error("a batch's operation is 'send' or 'recv', not '" + kind +
                                       "'");
               buffers.push_back(std::make_unique<CollectiveBuffer>(tensor, kind == "recv"));
               const CollectiveBuffer& b = *buffers.back();
               batch.push_back(kind == "send"
                                   ? collective::P2POp::Send(b.data, b.count, b.dtype, peer)
                                   : collective::P2POp::Recv(b.data, b.count, b.dtype, peer));
               if (stream != nullptr && b.stream != nullptr && b.stream != stream) {
                 throw py::value_error("a batch's tensors must be on one stream (or host memory)");
               }
               if (stream == nullptr) stream = b.stream;
             }
             ReleaseGil release;
             g.SendRecv(batch, stream);
             for (auto& b : buffers) b->Done();
           })
      .def("barrier", [](collective::Group& g) {
        ReleaseGil release;
        g.Barrier();
      });
  m.def("collective_declare",
        [](const std::vector<py::bytes>& actors, const std::string& backend,
           const std::string& name, double timeout_s, const std::string& order) {
          if (order != "given" && order != "topology") {
            throw InvalidArgumentError("a group's rank order is 'given' or 'topology', not '" +
                                       order + "'");
          }
          std::vector<ActorId> ids;
          for (const auto& a : actors) {
            std::string id = a;
            if (!ActorId::IsValidBinary(id)) throw InvalidArgumentError("not an actor id");
            ids.push_back(ActorId::FromBinary(id));
          }
          collective::GroupOptions options;
          options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
          options.order = order == "topology" ? collective::RankOrder::kTopology
                                              : collective::RankOrder::kAsGiven;
          ReleaseGil release;
          collective::internal::DeclareGroup(ids, ParseBackend(backend), name, options);
        });
  m.def(
      "collective_split",
      [](const std::string& parent, const std::string& name, int color, int key) {
        ReleaseGil release;
        return collective::SplitGroup(parent, name, color, key);
      },
      py::return_value_policy::reference);
  m.def(
      "collective_get",
      [](const std::string& name) {
        ReleaseGil release;
        return &collective::GetGroup(name);
      },
      py::return_value_policy::reference);
  m.def(
      "collective_init",
      [](const std::string& name, int world_size, int rank, const std::string& backend,
         double timeout_s) {
        collective::GroupOptions options;
        options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
        collective::Backend b = ParseBackend(backend);
        ReleaseGil release;
        return &collective::InitGroup(name, world_size, rank, b, options);
      },
      py::return_value_policy::reference);
  m.def("collective_destroy", [](const std::string& name) {
    ReleaseGil release;
    collective::DestroyGroup(name);
  });
  m.def("collective_in_group", [](const std::string& name) { return collective::InGroup(name); });
  m.def("collective_env",
        [] {  // what joining set in the C environment (Python's os.environ is a copy)
          py::dict out;
          for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
            if (const char* v = std::getenv(k)) out[k] = v;
          }
          return out;
        });
}

}  // namespace prism::binding

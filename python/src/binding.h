// Shared by the binding's files: how Python values, buffers and options become the core
// worker's, and back. Internal to the binding module.
#pragma once

#include "worker/core_worker.h"
#include "worker/task_executor.h"

#include <prism/collective.h>
#include <prism/gpu/tensor.h>
#include <prism/gpu/topology.h>
#include <prism/prism.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_set>
#include <string>
#include <vector>

namespace py = pybind11;

namespace prism::binding {

using internal::RefHandle;
using internal::RefPtr;

// Python buffers an encoded value reads from; released under the GIL whatever thread lets go.
struct PyBuffers {
  std::vector<py::buffer_info> infos;
  ~PyBuffers() {
    if (infos.empty() || !Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    infos.clear();
  }
};

// An encoded value of `size` bytes made of Python buffers placed at offsets (the package lays
// out pickle protocol 5 frames: header, pickle stream, then each out-of-band buffer aligned to
// 64 bytes), written with one copy straight to its destination. Call with the GIL held.
inline internal::EncodedValue PartsValue(size_t size, const py::list& parts, std::vector<RefPtr> nested) {
  auto buffers = std::make_shared<PyBuffers>();
  std::vector<std::pair<size_t, std::string_view>> at;
  for (const auto& item : parts) {
    auto part = item.cast<py::tuple>();
    size_t offset = part[0].cast<size_t>();
    py::buffer b = part[1].cast<py::buffer>();
    py::buffer_info info = b.request();
    size_t n = static_cast<size_t>(info.size * info.itemsize);
    if (offset > size || n > size - offset) throw InvalidArgumentError("a value part lies outside the value");
    at.emplace_back(offset, std::string_view(static_cast<const char*>(info.ptr), n));
    buffers->infos.push_back(std::move(info));
  }
  internal::EncodedValue v;
  v.size = size;
  v.write = [at, size](char* dst) {
    size_t covered = 0;
    for (const auto& [offset, bytes] : at) {
      if (offset > covered) std::memset(dst + covered, 0, offset - covered);  // padding
      internal::CopyBytes(dst + offset, bytes.data(), bytes.size());
      covered = offset + bytes.size();
    }
    if (size > covered) std::memset(dst + covered, 0, size - covered);
  };
  v.nested = std::move(nested);
  v.keep = buffers;
  return v;
}

// How an async method answers once its coroutine finished (on the actor's event loop).
struct Completion {
  ReplyLater later;
  bool done = false;
  void Finish(std::function<ReturnValues()> produce) {
    if (done) throw InvalidArgumentError("this call was answered already");
    done = true;
    py::gil_scoped_release release;
    later(std::move(produce));
  }
};

// Tokens of refs that became ready (prism.ObjectRef.future): the core's callbacks push them
// here without the GIL, and one Python thread takes them (the GIL is never taken on the core's
// event loop, which a thread holding the GIL may be waiting on).
template <typename Token>
class TokenQueue {
 public:
  void Push(Token token) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.push_back(token);
    }
    cv_.notify_one();
  }
  std::vector<Token> Take() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !tokens_.empty(); });
    std::vector<Token> out(tokens_.begin(), tokens_.end());
    tokens_.clear();
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Token> tokens_;
};

// (Never destroyed: a waiting thread may outlive the module.)
inline TokenQueue<uint64_t>& Ready() {
  static auto* queue = new TokenQueue<uint64_t>();
  return *queue;
}
// Calls of this actor process that their callers cancelled (hex task ids), for the thread that
// cancels them on the actor's event loop.
inline TokenQueue<std::string>& Cancelled() {
  static auto* queue = new TokenQueue<std::string>();
  return *queue;
}

// Bytes that stay where they are (in the object store, or a message) while Python reads them.
struct Pinned {
  std::string_view bytes;
  std::shared_ptr<const void> keep;
};

inline std::vector<RefPtr> Handles(const py::list& nested) {
  std::vector<RefPtr> out;
  out.reserve(nested.size());
  for (const auto& h : nested) out.push_back(h.cast<RefPtr>());
  return out;
}

// A task's results from Python: a list of (size, parts, nested handles), one per return object.
inline ReturnValues ValuesFrom(const py::list& values) {
  ReturnValues out;
  out.reserve(values.size());
  for (const auto& v : values) {
    auto t = v.cast<py::tuple>();
    out.push_back(PartsValue(t[0].cast<size_t>(), t[1].cast<py::list>(), Handles(t[2].cast<py::list>())));
  }
  return out;
}

inline std::vector<const RefHandle*> Raw(const std::vector<RefPtr>& refs) {
  std::vector<const RefHandle*> raw;
  raw.reserve(refs.size());
  for (const auto& r : refs) {
    if (!r) throw InvalidArgumentError("an empty ObjectRef");
    raw.push_back(r.get());
  }
  return raw;
}

template <typename T>
inline T Opt(const py::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<T>();
}

inline PlacementGroup GroupFrom(const py::dict& o) {
  uint64_t id = Opt<uint64_t>(o, "placement_group", 0);
  if (id == 0) return PlacementGroup();
  auto bundles = Opt<std::vector<std::map<std::string, double>>>(o, "placement_group_bundles", {});
  return PlacementGroup(id, "", PlacementStrategy::kPack, std::move(bundles));
}

inline TaskOptions TaskOptionsFrom(const py::dict& o) {
  TaskOptions t;
  t.num_cpus = Opt<double>(o, "num_cpus", 1.0);
  t.num_gpus = Opt<double>(o, "num_gpus", 0.0);
  t.memory = Opt<uint64_t>(o, "memory", 0);
  t.resources = Opt<std::map<std::string, double>>(o, "resources", {});
  t.max_retries = Opt<int>(o, "max_retries", 3);
  t.name = Opt<std::string>(o, "name", "");
  t.env = Opt<std::map<std::string, std::string>>(o, "env", {});
  t.runtime = Opt<std::string>(o, "runtime", "");
  t.placement_group = GroupFrom(o);
  t.placement_group_bundle_index = Opt<int>(o, "placement_group_bundle_index", -1);
  std::string strategy = Opt<std::string>(o, "scheduling_strategy", "DEFAULT");
  if (strategy == "SPREAD") {
    t.scheduling_strategy = SchedulingStrategy::kSpread;
  } else if (strategy != "DEFAULT") {
    throw InvalidArgumentError("scheduling_strategy must be \"DEFAULT\" or \"SPREAD\", not \"" + strategy + "\"");
  }
  return t;
}

inline ActorOptions ActorOptionsFrom(const py::dict& o) {
  ActorOptions a;
  a.num_cpus = Opt<double>(o, "num_cpus", 0.0);
  a.num_gpus = Opt<double>(o, "num_gpus", 0.0);
  a.memory = Opt<uint64_t>(o, "memory", 0);
  a.resources = Opt<std::map<std::string, double>>(o, "resources", {});
  a.name = Opt<std::string>(o, "name", "");
  a.ray_namespace = Opt<std::string>(o, "namespace", "");
  a.detached = Opt<bool>(o, "detached", false);
  a.max_restarts = Opt<int>(o, "max_restarts", 0);
  a.max_task_retries = Opt<int>(o, "max_task_retries", 0);
  a.max_concurrency = Opt<int>(o, "max_concurrency", 1);
  a.env = Opt<std::map<std::string, std::string>>(o, "env", {});
  std::string strategy = Opt<std::string>(o, "scheduling_strategy", "DEFAULT");
  if (strategy == "SPREAD") {
    a.scheduling_strategy = SchedulingStrategy::kSpread;
  } else if (strategy != "DEFAULT") {
    throw InvalidArgumentError("scheduling_strategy must be \"DEFAULT\" or \"SPREAD\", not \"" + strategy + "\"");
  }
  a.placement_group = GroupFrom(o);
  a.placement_group_bundle_index = Opt<int>(o, "placement_group_bundle_index", -1);
  return a;
}

inline std::vector<internal::SerializedArg> PackArgs(const py::list& args) {
  std::vector<internal::SerializedArg> packed;
  packed.reserve(args.size());
  for (const auto& item : args) {
    auto a = item.cast<py::tuple>();
    if (a[0].cast<std::string>() == "ref") {
      packed.push_back(internal::SerializedArg{a[1].cast<RefPtr>(), {}, {}});
    } else {
      packed.push_back(internal::MakeArg(PartsValue(a[1].cast<size_t>(), a[2].cast<py::list>(), Handles(a[3].cast<py::list>()))));
    }
  }
  return packed;
}

inline py::tuple GroupTuple(const PlacementGroup& g) {
  return py::make_tuple(g.id(), g.name(), g.bundles());
}

// A prism tensor handed to a DLPack consumer (numpy, PyTorch, CuPy): the versioned capsule when
// the consumer asks for DLPack >= 1.0, else the legacy one (numpy before 2.1 asks for that).
// `stream` is DLPack's: on cuda the consumer's stream (None: the legacy default stream; -1: the
// consumer orders itself), which is made to wait for the tensor's work on an event, with no host
// synchronization; sim devices are host memory, read by host code, so the work is waited for.
inline py::capsule DLPackCapsule(const gpu::Tensor& t, bool versioned, const py::object& stream) {
  Result<gpu::Backend*> backend = Status::Internal("unset");
  {
    py::gil_scoped_release release;  // (it takes the GPU layer's lock)
    backend = CurrentCoreWorker()->gpu_tasks().backend();
  }
  if (!backend.ok()) throw RuntimeError(backend.status().message());
  gpu::Backend& b = **backend;
  if (b.name() == "cuda") {
    int64_t handle = stream.is_none() ? 1 : stream.cast<int64_t>();
    if (handle != -1) {
      py::gil_scoped_release release;
      auto consumer = b.WrapStream(t.device(), static_cast<uintptr_t>(handle));
      auto ready = b.CreateEvent(t.device());
      Status st = !consumer.ok() ? consumer.status() : !ready.ok() ? ready.status() : (*ready)->Record(*t.stream());
      if (st.ok()) st = (*consumer)->Wait(**ready);
      if (!st.ok()) throw RuntimeError("cannot order the consumer's stream after the tensor's work: " + st.ToString());
    }
  } else {
    py::gil_scoped_release release;
    if (Status st = t.stream()->Synchronize(); !st.ok()) throw RuntimeError(st.ToString());
  }
  auto exported = t.ToDLPack(b);
  if (!exported.ok()) throw RuntimeError(exported.status().ToString());
  DLManagedTensorVersioned* v = *exported;
  if (versioned) {
    return py::capsule(v, "dltensor_versioned", [](PyObject* cap) {
      if (PyCapsule_IsValid(cap, "dltensor_versioned")) {  // not taken by a consumer
        auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
        if (m->deleter) m->deleter(m);
      }
    });
  }
  auto* legacy = new DLManagedTensor{v->dl_tensor, v, [](DLManagedTensor* self) {
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
inline DLManagedTensorVersioned* TakeCapsule(const py::object& cap) {
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
inline DLManagedTensorVersioned* ExportFrom(const py::object& obj, const py::object& stream_arg) {
  py::object cap;
  try {
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg, py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;  // a producer before DLPack 1.0 takes no max_version
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg);
  }
  return TakeCapsule(cap);
}

// Device memory and a stream of this process on `device`: the running GPU task's when it holds
// the device, else those prism keeps for work outside tasks.
inline std::pair<gpu::MemoryResource*, gpu::Stream*> DeviceResources(GpuTasks& gpu_tasks, int device) {
  gpu::Context* ctx = gpu_tasks.CurrentOrNull();
  if (ctx != nullptr && std::find(ctx->devices().begin(), ctx->devices().end(), device) != ctx->devices().end()) {
    return {&ctx->memory(device), &ctx->stream(device)};
  }
  Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> outside = Status::Internal("unset");
  {
    py::gil_scoped_release release;  // (it takes the GPU layer's lock)
    outside = gpu_tasks.OutsideTasks(device);
  }
  if (!outside.ok()) throw RuntimeError(outside.status().message());
  return *outside;
}

// A framework's tensor (PyTorch, CuPy, NumPy: anything with __dlpack__) as a prism tensor: its
// memory when it is prism's (a view of a prism tensor), else a copy into prism's memory of the
// GPU the task holds (or the tensor's own GPU). The producer orders its work before the copy
// through DLPack's stream argument (this process's stream for it).
inline gpu::Tensor TensorFromDLPack(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__")) {
    throw py::type_error(std::string(py::str(obj.get_type().attr("__name__"))) +
                         " does not support DLPack (it has no __dlpack__ and __dlpack_device__)");
  }
  auto where = obj.attr("__dlpack_device__")().cast<py::tuple>();
  int type = where[0].cast<int>(), id = where[1].cast<int>();
  GpuTasks& gpu_tasks = CurrentCoreWorker()->gpu_tasks();
  Result<gpu::Backend*> backend = Status::Internal("unset");
  {
    py::gil_scoped_release release;  // (it takes the GPU layer's lock)
    backend = gpu_tasks.backend();
  }
  if (!backend.ok()) throw RuntimeError("a prism tensor needs a GPU backend: " + backend.status().message());
  bool sim = (*backend)->name() == "sim";
  if (type != kDLCPU && type != kDLCUDA && type != kDLCUDAHost) {
    throw py::value_error("DLPack device type " + std::to_string(type) + ": prism takes CUDA and host memory");
  }
  if (type == kDLCUDA && sim) {
    throw py::value_error("a CUDA tensor, but this process's GPU backend is sim (its devices are host memory)");
  }
  gpu::Context* ctx = gpu_tasks.CurrentOrNull();
  int device = type == kDLCUDA ? id : (ctx != nullptr ? ctx->device() : 0);
  auto [memory, stream] = DeviceResources(gpu_tasks, device);
  py::object stream_arg = py::none();  // host memory: no stream
  if (type == kDLCUDA) stream_arg = py::int_(reinterpret_cast<uintptr_t>(stream->native()));
  DLManagedTensorVersioned* managed = ExportFrom(obj, stream_arg);
  Result<gpu::Tensor> t = Status::Internal("unset");
  {
    py::gil_scoped_release release;
    t = gpu::Tensor::FromDLPack(managed, **backend, *memory, *stream);
  }
  if (!t.ok()) {
    if (t.status().code() == StatusCode::kInvalidArgument) throw py::value_error(t.status().message());
    throw RuntimeError(t.status().ToString());
  }
  return std::move(t).value();
}

inline collective::Backend ParseBackend(const std::string& name) {
  if (name == "gloo") return collective::Backend::kGloo;
  if (name == "nccl") return collective::Backend::kNccl;
  throw InvalidArgumentError("a collective backend is 'gloo' or 'nccl', not '" + name + "'");
}

inline collective::ReduceOp ParseReduceOp(const std::string& op) {
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
      stream = DeviceResources(CurrentCoreWorker()->gpu_tasks(), id).second;
      stream_arg = py::int_(reinterpret_cast<uintptr_t>(stream->native()));
      sync_after = true;
    } else if (type != kDLCPU && type != kDLCUDAHost) {
      throw py::value_error("DLPack device type " + std::to_string(type) + ": collectives take CUDA and host memory");
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
      throw py::value_error("collectives take float16, bfloat16, float32, float64, int32 and int64 tensors");
    }
    data = static_cast<uint8_t*>(t.data) + t.byte_offset;
  }

  CollectiveBuffer(const py::object& x, bool writable) {
    if (!py::isinstance<gpu::Tensor>(x) && !PyObject_CheckBuffer(x.ptr()) && py::hasattr(x, "__dlpack__") &&
        py::hasattr(x, "__dlpack_device__")) {
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
      throw py::type_error("a collective takes a NumPy array (or another buffer) or a prism.gpu.Tensor, not " +
                           std::string(py::str(x.get_type().attr("__name__"))));
    }
    info = x.cast<py::buffer>().request(writable);
    ssize_t expect = info.itemsize;
    for (ssize_t d = info.ndim; d-- > 0;) {
      if (info.shape[d] != 1 && info.strides[d] != expect) {
        throw py::value_error("a collective's array must be C-contiguous (use numpy.ascontiguousarray)");
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
      throw py::value_error("collectives take float16, float32, float64, int32 and int64 arrays (and bfloat16 "
                            "prism tensors), not format '" + info.format + "'");
    }
  }
};

inline void CheckSameDType(const CollectiveBuffer& a, const CollectiveBuffer& b) {
  if (a.dtype != b.dtype) throw py::value_error("the input and the output must have the same dtype");
}


}  // namespace prism::binding

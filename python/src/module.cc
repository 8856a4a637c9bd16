// prism._prism: the Python binding over the C++ core worker. The prism package (Python) builds
// Ray's API on these few calls; values cross as bytes (pickled by the package) plus the handles
// of the refs inside them.
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

namespace prism {
namespace {

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
internal::EncodedValue PartsValue(size_t size, const py::list& parts, std::vector<RefPtr> nested) {
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
TokenQueue<uint64_t>& Ready() {
  static auto* queue = new TokenQueue<uint64_t>();
  return *queue;
}
// Calls of this actor process that their callers cancelled (hex task ids), for the thread that
// cancels them on the actor's event loop.
TokenQueue<std::string>& Cancelled() {
  static auto* queue = new TokenQueue<std::string>();
  return *queue;
}

// Bytes that stay where they are (in the object store, or a message) while Python reads them.
struct Pinned {
  std::string_view bytes;
  std::shared_ptr<const void> keep;
};

std::vector<RefPtr> Handles(const py::list& nested) {
  std::vector<RefPtr> out;
  out.reserve(nested.size());
  for (const auto& h : nested) out.push_back(h.cast<RefPtr>());
  return out;
}

// A task's results from Python: a list of (size, parts, nested handles), one per return object.
ReturnValues ValuesFrom(const py::list& values) {
  ReturnValues out;
  out.reserve(values.size());
  for (const auto& v : values) {
    auto t = v.cast<py::tuple>();
    out.push_back(PartsValue(t[0].cast<size_t>(), t[1].cast<py::list>(), Handles(t[2].cast<py::list>())));
  }
  return out;
}

std::vector<const RefHandle*> Raw(const std::vector<RefPtr>& refs) {
  std::vector<const RefHandle*> raw;
  raw.reserve(refs.size());
  for (const auto& r : refs) {
    if (!r) throw InvalidArgumentError("an empty ObjectRef");
    raw.push_back(r.get());
  }
  return raw;
}

template <typename T>
T Opt(const py::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<T>();
}

PlacementGroup GroupFrom(const py::dict& o) {
  uint64_t id = Opt<uint64_t>(o, "placement_group", 0);
  if (id == 0) return PlacementGroup();
  auto bundles = Opt<std::vector<std::map<std::string, double>>>(o, "placement_group_bundles", {});
  return PlacementGroup(id, "", PlacementStrategy::kPack, std::move(bundles));
}

TaskOptions TaskOptionsFrom(const py::dict& o) {
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

ActorOptions ActorOptionsFrom(const py::dict& o) {
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

std::vector<internal::SerializedArg> PackArgs(const py::list& args) {
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

py::tuple GroupTuple(const PlacementGroup& g) {
  return py::make_tuple(g.id(), g.name(), g.bundles());
}

// A prism tensor handed to a DLPack consumer (numpy, PyTorch, CuPy): the versioned capsule when
// the consumer asks for DLPack >= 1.0, else the legacy one (numpy before 2.1 asks for that).
// `stream` is DLPack's: on cuda the consumer's stream (None: the legacy default stream; -1: the
// consumer orders itself), which is made to wait for the tensor's work on an event, with no host
// synchronization; sim devices are host memory, read by host code, so the work is waited for.
py::capsule DLPackCapsule(const gpu::Tensor& t, bool versioned, const py::object& stream) {
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
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg, py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;  // a producer before DLPack 1.0 takes no max_version
    cap = obj.attr("__dlpack__")(py::arg("stream") = stream_arg);
  }
  return TakeCapsule(cap);
}

// Device memory and a stream of this process on `device`: the running GPU task's when it holds
// the device, else those prism keeps for work outside tasks.
std::pair<gpu::MemoryResource*, gpu::Stream*> DeviceResources(GpuTasks& gpu_tasks, int device) {
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
gpu::Tensor TensorFromDLPack(const py::object& obj) {
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

void CheckSameDType(const CollectiveBuffer& a, const CollectiveBuffer& b) {
  if (a.dtype != b.dtype) throw py::value_error("the input and the output must have the same dtype");
}

}  // namespace
}  // namespace prism

PYBIND11_MODULE(_prism, m) {
  using namespace prism;
  m.doc() = "prism's core worker, for the prism package";

  // Errors: the package turns these into its own (Ray-named) exception classes.
  static py::exception<Error> error(m, "Error");
  static py::exception<TaskError> task_error(m, "TaskError", error.ptr());
  static py::exception<WorkerCrashedError> crashed(m, "WorkerCrashedError", error.ptr());
  static py::exception<InfeasibleError> infeasible(m, "InfeasibleError", error.ptr());
  static py::exception<GetTimeoutError> timeout(m, "GetTimeoutError", error.ptr());
  static py::exception<ObjectLostError> lost(m, "ObjectLostError", error.ptr());
  static py::exception<OwnerDiedError> owner_died(m, "OwnerDiedError", error.ptr());
  static py::exception<ActorDiedError> actor_died(m, "ActorDiedError", error.ptr());
  static py::exception<TaskCancelledError> cancelled(m, "TaskCancelledError", error.ptr());
  static py::exception<ObjectStoreFullError> store_full(m, "ObjectStoreFullError", error.ptr());
  static py::exception<InvalidArgumentError> invalid(m, "InvalidArgumentError", error.ptr());
  static py::exception<RuntimeError> runtime(m, "RuntimeError", error.ptr());
  static py::exception<collective::CollectiveError> collective_error(m, "CollectiveError", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TaskError& e) {
      // (function, remote type, message with the remote traceback, pickled exception)
      py::tuple args = py::make_tuple(e.function(), e.remote_type(), e.remote_message(), py::bytes(e.payload()));
      PyErr_SetObject(task_error.ptr(), args.ptr());
    } catch (const WorkerCrashedError& e) {
      crashed(e.what());
    } catch (const InfeasibleError& e) {
      infeasible(e.what());
    } catch (const GetTimeoutError& e) {
      timeout(e.what());
    } catch (const ObjectLostError& e) {
      lost(e.what());
    } catch (const OwnerDiedError& e) {
      owner_died(e.what());
    } catch (const ActorDiedError& e) {
      actor_died(e.what());
    } catch (const TaskCancelledError& e) {
      cancelled(e.what());
    } catch (const collective::CollectiveError& e) {
      collective_error(e.what());
    } catch (const ObjectStoreFullError& e) {
      store_full(e.what());
    } catch (const InvalidArgumentError& e) {
      invalid(e.what());
    } catch (const RuntimeError& e) {
      runtime(e.what());
    } catch (const Error& e) {
      error(e.what());
    }
  });

  py::class_<Completion, std::shared_ptr<Completion>>(m, "Completion")
      .def("ok",
           [](Completion& c, size_t size, const py::list& parts, const py::list& nested) {
             auto value = std::make_shared<ReturnValues>();
             value->push_back(PartsValue(size, parts, Handles(nested)));
             c.Finish([value] { return std::move(*value); });
           })
      .def("ok_multi",
           [](Completion& c, const py::list& values) {
             auto out = std::make_shared<ReturnValues>(ValuesFrom(values));
             c.Finish([out] { return std::move(*out); });
           })
      .def("error", [](Completion& c, const std::string& type, const std::string& message, const py::bytes& payload) {
        std::string p(payload);
        c.Finish([type, message, p]() -> ReturnValues { throw ForeignTaskError(type, message, p); });
      });

  py::class_<Pinned>(m, "Pinned", py::buffer_protocol())
      .def_buffer([](Pinned& p) {
        return py::buffer_info(const_cast<char*>(p.bytes.data()), 1, py::format_descriptor<uint8_t>::format(), 1,
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
        return py::make_tuple(o.socket_path, py::bytes(o.worker_id), py::bytes(o.node_id));
      });

  m.def("is_worker_process", &IsWorkerProcess);
  m.def("is_initialized", &IsInitialized);

  m.def(
      "init",
      [](const std::string& address, double num_cpus, int num_gpus, uint64_t object_store_memory, uint64_t memory,
         const std::map<std::string, double>& resources, const std::string& log_level,
         const std::vector<std::string>& worker_argv, const std::vector<std::string>& code_search_path,
         const std::string& gpu_topology, bool timeline, const std::vector<std::string>& worker_launch_prefix,
         bool object_store_prefault) {
        InitOptions o;
        o.object_store_prefault = object_store_prefault;
        o.gpu_topology = gpu_topology;
        o.timeline = timeline;
        o.worker_launch_prefix = worker_launch_prefix;
        o.address = address;
        o.num_cpus = num_cpus;
        o.num_gpus = num_gpus;
        o.object_store_memory = object_store_memory;
        o.memory = memory;
        o.resources = resources;
        o.log_level = log_level;
        o.worker_argv = worker_argv;
        o.code_search_path = code_search_path;
        py::gil_scoped_release release;
        Init(o);
      },
      py::arg("address"), py::arg("num_cpus"), py::arg("num_gpus"), py::arg("object_store_memory"),
      py::arg("memory"), py::arg("resources"), py::arg("log_level"), py::arg("worker_argv"),
      py::arg("code_search_path"), py::arg("gpu_topology"), py::arg("timeline"), py::arg("worker_launch_prefix"),
      py::arg("object_store_prefault") = false);

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

  m.def("write_timeline", [](const std::string& path) {
    py::gil_scoped_release release;
    WriteTimeline(path);
  });

  m.def("shutdown", [] {
    py::gil_scoped_release release;
    Shutdown();
  });

  // In a worker process: runs tasks until the daemon ends the worker (the process exits).
  // `execute(function, args)` runs one task: args are read-only memoryviews of the encoded
  // arguments; it returns ("ok", bytes, [handles]) or ("error", type, message, payload).
  m.def("current_actor", [] {
    std::shared_ptr<CoreWorker> core = CurrentCoreWorker();
    py::gil_scoped_release release;
    return core->CurrentActor();
  });
  m.def("exit_actor", [](const std::string& reason) {
    std::shared_ptr<CoreWorker> core = CurrentCoreWorker();
    py::gil_scoped_release release;
    core->ExitActor(reason);
  });
  m.def("take_cancelled", [] {
    py::gil_scoped_release release;
    return Cancelled().Take();
  });
  m.def("run_worker", [](py::object execute) {
    auto holder = std::make_shared<py::object>(std::move(execute));
    SetCallCanceller([](const TaskId& task) { Cancelled().Push(task.Hex()); });
    SetForeignExecutor([holder](const rpc::TaskSpec& spec, const std::vector<std::string_view>& args,
                                const std::shared_ptr<const void>& source,
                                const ReplyLater& later) -> ReturnValues {
      // Waiting for the GIL is not blocking: another thread would only wait for it too.
      auto asked = std::chrono::steady_clock::now();
      py::gil_scoped_acquire gil;
      TaskExecutor::ExcuseWait(std::chrono::steady_clock::now() - asked);
      py::list views;
      for (const auto& a : args) views.append(Pinned{a, source});  // zero-copy reads keep the args alive
      auto completion = std::make_shared<Completion>();
      completion->later = later;
      py::tuple out;
      try {
        const char* kind = spec.has_actor_creation() ? "create" : !spec.actor_id().empty() ? "method" : "task";
        out = (*holder)(kind, spec.function(), views, spec.streaming(), completion,
                        std::max<uint32_t>(1, spec.num_returns()), TaskId::FromBinary(spec.task_id()).Hex())
                  .cast<py::tuple>();
      } catch (py::error_already_set& e) {
        throw std::runtime_error(std::string("the Python worker failed: ") + e.what());
      }
      std::string kind = out[0].cast<std::string>();
      if (kind == "deferred") throw ReplyDeferred{};  // the completion answers later
      // An argument's device objects went with their producer: the caller may rebuild it.
      if (kind == "lost") throw ObjectLostError(out[1].cast<std::string>());
      if (kind == "error") {
        throw ForeignTaskError(out[1].cast<std::string>(), out[2].cast<std::string>(),
                               out[3].cast<std::string>());
      }
      if (kind == "ok_multi") return ValuesFrom(out[1].cast<py::list>());
      ReturnValues values;
      values.push_back(PartsValue(out[1].cast<size_t>(), out[2].cast<py::list>(), Handles(out[3].cast<py::list>())));
      return values;
    });
    {
      py::gil_scoped_release release;
      Init();  // never returns in a worker process
    }
  });

  m.def(
      "submit_task",
      [](const std::string& function, const py::list& args, const py::dict& options) {
        TaskOptions t = TaskOptionsFrom(options);
        std::vector<internal::SerializedArg> packed = PackArgs(args);
        py::gil_scoped_release release;
        return internal::SubmitTask(function, std::move(packed), t);
      },
      py::arg("function"), py::arg("args"), py::arg("options"));
  // A task with num_returns > 1: the handles of its return objects, in order.
  m.def("submit_task_returns",
        [](const std::string& function, const py::list& args, const py::dict& options, uint32_t num_returns) {
          TaskOptions t = TaskOptionsFrom(options);
          std::vector<internal::SerializedArg> packed = PackArgs(args);
          py::gil_scoped_release release;
          return CurrentCoreWorker()->SubmitTaskReturns(function, std::move(packed), t, num_returns);
        });

  py::class_<internal::StreamHandle, std::shared_ptr<internal::StreamHandle>>(m, "StreamHandle")
      .def("next",
           [](internal::StreamHandle& s, int64_t timeout_ms) -> py::object {
             RefPtr r;
             {
               py::gil_scoped_release release;
               r = s.Next(timeout_ms);
             }
             if (!r) return py::none();
             return py::cast(r);
           })
      .def("completion", &internal::StreamHandle::completion);

  m.def("submit_streaming_task", [](const std::string& function, const py::list& args, const py::dict& options) {
    TaskOptions t = TaskOptionsFrom(options);
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    py::gil_scoped_release release;
    return internal::SubmitStreamingTask(function, std::move(packed), t);
  });

  // In a streaming task: sends one value to the caller.
  m.def("stream_write", [](size_t size, const py::list& parts, const py::list& nested) {
    internal::EncodedValue v = PartsValue(size, parts, Handles(nested));
    py::gil_scoped_release release;
    internal::StreamWrite(v);
  });

  py::class_<internal::ActorRef>(m, "ActorRef")
      .def_property_readonly("id", [](const internal::ActorRef& a) { return py::bytes(a.id.Binary()); })
      .def_property_readonly("lifetime", [](const internal::ActorRef& a) { return a.lifetime; });

  m.def("create_actor", [](const std::string& factory, const py::list& args, const py::dict& options) {
    ActorOptions a = ActorOptionsFrom(options);
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    py::gil_scoped_release release;
    return internal::CreateActor(factory, std::move(packed), a);
  });
  m.def("submit_actor_task", [](const internal::ActorRef& actor, const std::string& method, const py::list& args) {
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    py::gil_scoped_release release;
    return internal::SubmitActorTask(actor, method, std::move(packed));
  });
  m.def("submit_actor_task_returns", [](const internal::ActorRef& actor, const std::string& method,
                                        const py::list& args, uint32_t num_returns) {
    std::vector<internal::SerializedArg> packed = PackArgs(args);
    py::gil_scoped_release release;
    return CurrentCoreWorker()->SubmitActorTaskReturns(actor, method, std::move(packed), num_returns);
  });
  m.def("make_actor_ref", [](const py::bytes& id, const RefPtr& lifetime) {
    std::string bin(id);
    if (!ActorId::IsValidBinary(bin)) throw InvalidArgumentError("not an actor id");
    return internal::ActorRef{ActorId::FromBinary(bin), lifetime};
  });
  m.def("get_actor", [](const std::string& name, const std::string& ray_namespace) {
    py::gil_scoped_release release;
    return internal::GetActorByName(name, ray_namespace);
  });
  // What runs here: ids (hex; task and actor empty where none), the resources the running task
  // (or this actor) holds, and how often this actor was restarted.
  m.def("runtime_context", [] {
    RuntimeContextInfo c = CurrentCoreWorker()->RuntimeContext();
    py::dict d;
    d["job_id"] = c.job_id;
    d["worker_id"] = c.worker_id;
    d["node_id"] = c.node_id;
    d["task_id"] = c.task_id;
    d["actor_id"] = c.actor_id;
    d["resources"] = c.resources;
    d["gpu_ids"] = c.gpu_ids;
    d["actor_restarts"] = c.actor_restarts;
    d["actor_name"] = c.actor_name;
    d["is_worker"] = c.is_worker;
    return d;
  });
  m.def("kill_actor", [](const py::bytes& id, bool no_restart) {
    std::string bin(id);
    if (!ActorId::IsValidBinary(bin)) throw InvalidArgumentError("not an actor id");
    py::gil_scoped_release release;
    internal::KillActor(ActorId::FromBinary(bin), no_restart);
  });

  m.def("create_placement_group",
        [](const std::vector<std::map<std::string, double>>& bundles, const std::string& strategy,
           const std::string& name, bool require_nvlink, bool detached) {
          PlacementGroupOptions o;
          o.bundles = bundles;
          o.name = name;
          o.require_nvlink = require_nvlink;
          o.detached = detached;
          if (strategy == "PACK") {
            o.strategy = PlacementStrategy::kPack;
          } else if (strategy == "SPREAD") {
            o.strategy = PlacementStrategy::kSpread;
          } else if (strategy == "STRICT_PACK") {
            o.strategy = PlacementStrategy::kStrictPack;
          } else if (strategy == "STRICT_SPREAD") {
            o.strategy = PlacementStrategy::kStrictSpread;
          } else {
            throw InvalidArgumentError("strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, not " + strategy);
          }
          PlacementGroup g;
          {
            py::gil_scoped_release release;
            g = CreatePlacementGroup(o);
          }
          return GroupTuple(g);
        });
  m.def("wait_placement_group", [](uint64_t id, int64_t timeout_ms) {
    py::gil_scoped_release release;
    return PlacementGroup(id, "", PlacementStrategy::kPack, {}).Wait(std::chrono::milliseconds(timeout_ms));
  });
  m.def("remove_placement_group", [](uint64_t id) {
    py::gil_scoped_release release;
    RemovePlacementGroup(PlacementGroup(id, "", PlacementStrategy::kPack, {}));
  });
  m.def("get_placement_group", [](const std::string& name) {
    PlacementGroup g;
    {
      py::gil_scoped_release release;
      g = GetPlacementGroup(name);
    }
    return GroupTuple(g);
  });
  m.def("gpu_ids", &GetGpuIds);
  // In an actor's process, as it is created: the name its output lines carry.
  m.def("set_actor_label", [](const std::string& label) { CurrentCoreWorker()->SetActorLabel(label); });
  m.def("nodes", [] {
    std::vector<NodeInfo> nodes;
    {
      py::gil_scoped_release release;
      nodes = Nodes();
    }
    py::list out;
    for (const auto& n : nodes) {
      py::dict d;
      d["NodeID"] = n.node_id;
      d["Alive"] = n.alive;
      d["SessionDir"] = n.session_dir;
      d["Resources"] = n.resources;
      d["Available"] = n.available;
      out.append(d);
    }
    return out;
  });
  // The node's placement groups (placement_group_table).
  m.def("placement_groups", [] {
    rpc::StatusReply st;
    {
      py::gil_scoped_release release;
      st = CurrentCoreWorker()->NodeStatus();
    }
    static const char* kStates[] = {"PENDING", "CREATED", "REMOVED"};
    static const char* kStrategies[] = {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"};
    py::list out;
    for (const auto& g : st.placement_groups()) {
      py::dict d;
      d["id"] = g.id();
      d["name"] = g.name();
      d["strategy"] = g.strategy() >= 0 && g.strategy() < 4 ? kStrategies[g.strategy()] : "PACK";
      d["state"] = g.state() >= 0 && g.state() < 3 ? kStates[g.state()] : "PENDING";
      d["job_id"] = JobId::FromBinary(g.job_id()).Hex();
      d["detached"] = g.detached();
      py::list bundles;
      for (const auto& b : g.bundles()) {
        py::dict bd;
        for (const auto& r : b.resources()) bd[py::str(r.name())] = static_cast<double>(r.milli()) / 1000.0;
        bundles.append(bd);
      }
      d["bundles"] = bundles;
      out.append(d);
    }
    return out;
  });
  m.def("object_store_stats", [] {
    ObjectStoreStats st;
    {
      py::gil_scoped_release release;
      st = GetObjectStoreStats();
    }
    py::dict d;
    d["capacity"] = st.capacity;
    d["used"] = st.used;
    return d;
  });

  m.def("put", [](size_t size, const py::list& parts, const py::list& nested) {
    internal::EncodedValue v = PartsValue(size, parts, Handles(nested));
    py::gil_scoped_release release;
    return internal::Put(v);
  });

  m.def("make_ref", [](const py::bytes& id, const std::string& socket, const py::bytes& worker, const py::bytes& node) {
    std::string bin(id);
    if (!ObjectId::IsValidBinary(bin)) throw InvalidArgumentError("not an object id");
    return internal::MakeRef(ObjectId::FromBinary(bin), internal::OwnerAddress{socket, std::string(worker), std::string(node)});
  });

  // The encoded values of `refs` (bytes), in order; raises the first error.
  m.def("get", [](const std::vector<RefPtr>& refs, int64_t timeout_ms) {
    std::vector<internal::EncodedView> views;
    {
      py::gil_scoped_release release;
      views = internal::GetEncoded(Raw(refs), timeout_ms);
    }
    py::list out;
    for (auto& v : views) out.append(Pinned{v.bytes, std::move(v.keep)});
    return out;
  });

  // Pushes `token` to take_ready() once `ref` is ready.
  m.def("when_ready", [](const RefPtr& ref, uint64_t token) {
    if (!ref) throw InvalidArgumentError("an empty ObjectRef");
    std::shared_ptr<CoreWorker> core = CurrentCoreWorker();
    py::gil_scoped_release release;
    core->WhenReady(*ref, [token] { Ready().Push(token); });
  });
  m.def("take_ready", [] {
    py::gil_scoped_release release;
    return Ready().Take();
  });
  m.def("rebuild_lost", [](const RefPtr& ref) {
    py::gil_scoped_release release;
    return internal::RebuildLost(*ref);
  });

  m.def("wait", [](const std::vector<RefPtr>& refs, size_t num_returns, int64_t timeout_ms) {
    py::gil_scoped_release release;
    std::vector<const RefHandle*> raw = Raw(refs);
    std::unordered_set<ObjectId> seen;
    seen.reserve(raw.size());
    for (const RefHandle* r : raw) {
      if (!seen.insert(r->id()).second) throw InvalidArgumentError("wait() was given the same ObjectRef twice");
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
    py::gil_scoped_release release;
    internal::CancelTask(*ref, force);
  });

  m.def("kv_put", [](const std::string& ns, const py::bytes& key, const py::bytes& value, bool overwrite) {
    std::string k(key), v(value);
    py::gil_scoped_release release;
    return CurrentCoreWorker()->KvPut(ns, k, v, overwrite);
  });
  m.def("kv_get", [](const std::string& ns, const py::bytes& key) -> py::object {
    std::string k(key);
    std::optional<std::string> v;
    {
      py::gil_scoped_release release;
      v = CurrentCoreWorker()->KvGet(ns, k);
    }
    if (!v) return py::none();
    return py::bytes(*v);
  });
}

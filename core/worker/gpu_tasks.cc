#include "worker/gpu_tasks.h"

#include <prism/errors.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <msgpack.hpp>
#include <string>

#include "base/ids.h"
#include "base/logging.h"
#include "base/mutex.h"
#include "base/process_info.h"
#include "worker/device_transfer.h"

namespace prism {
namespace {

struct ThreadContext {
  bool holds_gpus = false;
  std::shared_ptr<gpu::Context> context;
  std::string error;  // why there is no context although the task holds GPUs
};
thread_local ThreadContext tl_gpu;
thread_local std::vector<std::string> tl_exports;  // device objects the running task packed

}  // namespace

GpuTasks::GpuTasks()
    : moves_(
          [this](const std::string& id) { return SendSource(id); },
          [this](const std::string& id, const WorkerId& importer) { RemoveImport(id, importer); }) {
}

void GpuTasks::WaitForSends() { moves_.WaitForSends(); }

GpuTasks::~GpuTasks() {
  WaitForSends();  // sends under way end (done, or failed within their timeout) before what they
                   // use goes
  {
    MutexLock lock(liveness_->mu);
    liveness_->owner = nullptr;
  }
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  closer_cv_.notify_all();
  if (closer_.joinable()) closer_.join();
  CloseFinishedImports(/*wait=*/true);
  MutexLock lock(mu_);
  exported_.clear();
  actor_context_.reset();
  bool live = false;  // tensors that outlive the runtime (a Python driver's, say) still use them
  for (const auto& [device, memory] : task_memory_) live = live || memory->bytes_in_use() > 0;
  if (live) {
    // Their memory is freed later, on their streams, into their pools: those stay (a process
    // keeps its CUDA context to its end anyway).
    PRISM_LOG_DEBUG("device tensors outlive this runtime: its GPU backend stays for them");
    for (auto& [device, s] : import_streams_) (void)s.release();
    for (auto& [device, pool] : streams_) {
      for (auto& s : pool) (void)s.release();
    }
    for (auto& [device, m] : task_memory_) (void)m.release();
    (void)backend_.release();
    return;
  }
  import_streams_.clear();
  streams_.clear();  // before the backend they belong to
  backend_.reset();
}

Status GpuTasks::EnsureBackend() {
  if (!tried_) {
    tried_ = true;
    gpu::BackendConfig config = gpu::BackendConfigFromEnv();
    if (!topology_.empty()) config.topology = topology_;
    auto b = gpu::CreateBackend(config);
    if (b.ok()) {
      backend_ = std::move(b).value();
    } else {
      backend_status_ = b.status();
    }
  }
  return backend_status_;
}

void GpuTasks::Enter(const std::vector<int>& gpus, uint64_t gpu_memory) {
  tl_gpu = ThreadContext{};
  tl_exports.clear();
  if (gpus.empty()) return;
  tl_gpu.holds_gpus = true;
  MutexLock lock(mu_);
  if (actor_context_) {  // an actor's calls share the context its creation made
    tl_gpu.context = actor_context_;
    return;
  }
  Status st = EnsureBackend();
  if (!st.ok()) {
    tl_gpu.error = "this worker has no GPU backend: " + st.message();
    return;
  }
  // The worker was started with CUDA_VISIBLE_DEVICES = its GPUs: they are devices 0..k-1 here.
  std::vector<int> devices;
  for (size_t i = 0; i < gpus.size() && static_cast<int>(i) < backend_->device_count(); ++i) {
    devices.push_back(static_cast<int>(i));
  }
  if (devices.empty()) {
    tl_gpu.error = "the worker holds GPUs " + std::to_string(gpus.size()) + " but its " +
                   std::string(backend_->name()) + " backend sees no device";
    return;
  }
  // A stream of each device's pool (taken in turn) and each device's memory.
  std::vector<gpu::Stream*> streams;
  std::vector<gpu::MemoryResource*> memories;
  std::optional<uint64_t> cap;
  if (gpu_memory > 0) cap = gpu_memory;
  for (int device : devices) {
    auto& pool = streams_[device];
    if (pool.empty()) {
      for (int i = 0; i < kStreamsPerDevice; ++i) {
        auto s = backend_->CreateStream(
            device, "prism gpu" + std::to_string(device) + " stream " + std::to_string(i));
        if (!s.ok()) {
          tl_gpu.error = "cannot create a stream: " + s.status().message();
          return;
        }
        pool.push_back(std::move(s).value());
      }
    }
    streams.push_back(pool[next_stream_[device]++ % pool.size()].get());
    auto memory = backend_->memory(device);
    if (!memory.ok()) {
      tl_gpu.error = "no device memory: " + memory.status().message();
      return;
    }
    (*memory)->set_limit(cap);
    memories.push_back(TaskMemory(device, *memory));
  }
  tl_gpu.context = std::make_shared<gpu::Context>(*backend_, devices, std::move(streams),
                                                  std::move(memories), cap);
}

void GpuTasks::Leave(bool keep) {
  if (keep && tl_gpu.context) {
    MutexLock lock(mu_);
    actor_context_ = tl_gpu.context;
  }
  tl_gpu = ThreadContext{};
}

Status GpuTasks::DeviceFault() {
  MutexLock lock(mu_);
  if (!backend_) return Status::OK();
  for (const auto& [device, pool] : streams_) {
    Status st = backend_->DeviceStatus(device);
    if (!st.ok()) return st;
  }
  return Status::OK();
}

gpu::Context* GpuTasks::CurrentOrNull() { return tl_gpu.context.get(); }

gpu::Context& GpuTasks::Current() {
  if (!tl_gpu.holds_gpus) {
    throw RuntimeError(
        "gpu::CurrentContext() is for tasks and actors that hold GPUs (num_gpus > 0)");
  }
  if (!tl_gpu.context) throw RuntimeError(tl_gpu.error);
  return *tl_gpu.context;
}

// ---- device objects ----

namespace {

// The descriptor a tensor travels as: (version, id, pid, device uuid, dtype, shape, memory
// handle, event handle).
using Descriptor =
    std::tuple<int, std::string, int64_t, std::string, int, std::vector<int64_t>, std::string,
               std::string, std::string, std::string, std::string>;  // + producer address

}  // namespace

// An imported tensor's mapping: closed once the last use on its stream is done, and then
// released at its producer.
struct GpuTasks::Import {
  std::shared_ptr<Liveness> liveness;
  gpu::Backend* backend;
  std::vector<gpu::Stream*> streams;  // its last users' (a task's streams, or the import stream)
  void* ptr;
  int device;
  internal::OwnerAddress producer;
  std::string id;
  bool registered = false;
  std::shared_future<bool> registering;  // set while (and after) it is counted at the producer
  ~Import() {
    if (ptr == nullptr) return;  // never mapped (its registration or open failed)
    MutexLock alive(liveness->mu);
    GpuTasks* owner = liveness->owner;
    if (owner == nullptr) return;  // the runtime is gone, and its mappings with it
    std::vector<std::unique_ptr<gpu::Event>> done;
    bool recorded = true;
    for (gpu::Stream* s : streams) {
      auto e = backend->CreateEvent(s->device());
      recorded = recorded && e.ok() && (*e)->Record(*s).ok();
      if (e.ok()) done.push_back(std::move(e).value());
    }
    MutexLock lock(owner->mu_);
    if (recorded) {
      owner->closing_.push_back(Closing{std::move(done), ptr, producer, id, registered});
      if (!owner->closer_.joinable() && !owner->stopping_)
        owner->closer_ = std::thread([o = owner] { o->CloserLoop(); });
      owner->closer_cv_.notify_all();
    } else {
      (void)backend->CloseIpc(ptr);  // the device is gone anyway
      // (Posted to the event loop: the producer may let the object go.)
      if (registered && owner->peers_.release_import) owner->peers_.release_import(producer, id);
    }
  }
};

void GpuTasks::CloserLoop() {
  UniqueLock lock(mu_);
  while (!stopping_) {
    closer_cv_.wait_for(lock, std::chrono::milliseconds(20));
    if (closing_.empty()) continue;
    lock.unlock();
    CloseFinishedImports(false);
    lock.lock();
  }
}

void GpuTasks::SetPeers(Peers peers) {
  MutexLock lock(mu_);
  peers_ = std::move(peers);
}

std::vector<std::string> GpuTasks::TakeTaskExports() {
  std::vector<std::string> out;
  out.swap(tl_exports);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());  // (packing runs twice)
  return out;
}

void GpuTasks::Associate(const ObjectId& object, const std::vector<std::string>& ids) {
  MutexLock lock(mu_);
  std::vector<std::string>& held = objects_[object];
  for (const std::string& id : ids) {
    auto it = exported_.find(id);
    if (it == exported_.end() || std::find(held.begin(), held.end(), id) != held.end()) continue;
    it->second.objects++;
    it->second.associated = true;
    held.push_back(id);
  }
}

std::optional<GpuTasks::Exported> GpuTasks::MaybeFreeLocked(const std::string& id) {
  auto it = exported_.find(id);
  if (it == exported_.end() || !it->second.associated || it->second.objects > 0 ||
      !it->second.imports.empty()) {
    return std::nullopt;
  }
  Exported gone = std::move(it->second);
  exported_.erase(it);
  return gone;
}

void GpuTasks::Forget(const std::vector<std::string>& ids) {
  std::vector<Exported> gone;
  MutexLock lock(mu_);
  for (const std::string& id : ids) {
    auto it = exported_.find(id);
    if (it == exported_.end() || it->second.associated || !it->second.imports.empty()) continue;
    gone.push_back(std::move(it->second));
    exported_.erase(it);
  }
  // (`gone` is destroyed after the lock is released: declared before it.)
}

void GpuTasks::ReleaseObject(const ObjectId& object) {
  std::vector<Exported> gone;
  {
    MutexLock lock(mu_);
    auto held = objects_.find(object);
    if (held == objects_.end()) return;
    for (const std::string& id : held->second) {
      auto it = exported_.find(id);
      if (it != exported_.end()) it->second.objects--;
      if (auto e = MaybeFreeLocked(id)) gone.push_back(std::move(*e));
    }
    objects_.erase(held);
  }
  // Freed outside the lock: on the producing stream, after the work that made them.
}

bool GpuTasks::AddImport(const std::string& id, const WorkerId& importer,
                         std::string* memory_handle) {
  MutexLock lock(mu_);
  auto it = exported_.find(id);
  if (it == exported_.end()) return false;
  if (Status st = RestoreLocked(id, it->second); !st.ok()) {
    PRISM_LOG_WARN("device object {} cannot be restored from the host store: {}", id,
                   st.ToString());
    return false;
  }
  it->second.imports[importer]++;
  it->second.last_use = ++use_tick_;
  *memory_handle = it->second.handle;
  return true;
}

void GpuTasks::RemoveImport(const std::string& id, const WorkerId& importer) {
  std::optional<Exported> gone;
  {
    MutexLock lock(mu_);
    auto it = exported_.find(id);
    if (it == exported_.end()) return;
    auto imp = it->second.imports.find(importer);
    if (imp != it->second.imports.end() && --imp->second <= 0) it->second.imports.erase(imp);
    gone = MaybeFreeLocked(id);
  }
}

void GpuTasks::ImporterDied(const WorkerId& importer) {
  std::vector<Exported> gone;
  MutexLock lock(mu_);
  std::vector<std::string> ids;
  for (auto& [id, e] : exported_) {
    if (e.imports.erase(importer) > 0) ids.push_back(id);
  }
  for (const std::string& id : ids) {
    if (auto e = MaybeFreeLocked(id)) gone.push_back(std::move(*e));
  }
  // (`gone` is destroyed after the lock is released: declared before it.)
}

Result<gpu::Stream*> GpuTasks::ImportStream(int device) {
  auto& s = import_streams_[device];
  if (!s) {
    auto created = backend_->CreateStream(device, "prism imports gpu" + std::to_string(device));
    if (!created.ok()) return created.status();
    s = std::move(created).value();
  }
  return s.get();
}

std::string GpuTasks::PackTensor(const gpu::Tensor& t) {
  if (!t.valid()) throw InvalidArgumentError("an empty gpu::Tensor cannot be passed or returned");
  std::string& cache = t.export_cache();
  MutexLock lock(mu_);
  if (!cache.empty()) {  // (packing runs twice: measure, then write; and a tensor may be returned
                         // again)
    Descriptor known;
    msgpack::unpack(cache.data(), cache.size()).get().convert(known);
    auto it = exported_.find(std::get<1>(known));
    if (it != exported_.end() && !it->second.spilled) {
      // Still held: its event now covers any work done on it since it was last passed on.
      it->second.last_use = ++use_tick_;
      Status st = it->second.ready->Record(*t.stream());
      if (!st.ok()) throw RuntimeError("cannot record the tensor's event: " + st.message());
      tl_exports.push_back(std::get<1>(known));
      return cache;
    }
    cache.clear();  // released meanwhile: exported again, under a new id
  }
  Status st = EnsureBackend();
  if (!st.ok()) throw RuntimeError("a gpu::Tensor needs a GPU backend: " + st.message());
  auto memory = backend_->memory(t.device());
  if (!memory.ok())
    throw RuntimeError("cannot pass this gpu::Tensor on: " + memory.status().message());
  gpu::Tensor shared = t;  // what other processes map: the tensor, or a copy prism allocated
  auto mem = (*memory)->Export(t.data(), t.bytes());
  if (!mem.ok()) {
    // Not an allocation of prism's pool (a view into one, or memory taken over by DLPack): it is
    // passed on as a copy, made now (and waited for: the original may go right after).
    auto copy = gpu::Tensor::Empty(*backend_, **memory, *t.stream(), t.dtype(), t.shape());
    if (copy.ok()) st = t.stream()->CopyAsync(copy->data(), t.data(), t.bytes());
    if (copy.ok() && st.ok()) st = t.stream()->Synchronize();
    if (!copy.ok() || !st.ok()) {
      throw RuntimeError("cannot copy this gpu::Tensor to pass it on: " +
                         (copy.ok() ? st.message() : copy.status().message()));
    }
    shared = *copy;
    mem = (*memory)->Export(shared.data(), shared.bytes());
  }
  auto ready = backend_->CreateIpcEvent(t.device());
  if (ready.ok()) st = (*ready)->Record(*t.stream());
  auto event = ready.ok() && st.ok() ? (*ready)->Export() : Result<gpu::IpcEventHandle>(st);
  if (!ready.ok() || !event.ok() || !mem.ok()) {
    Status why = !ready.ok() ? ready.status() : !event.ok() ? event.status() : mem.status();
    throw RuntimeError("cannot pass this gpu::Tensor on: " + why.message());
  }
  auto info = backend_->device(t.device());
  std::string id = RandomUniqueId().Hex();
  Descriptor d{1,
               id,
               static_cast<int64_t>(getpid()),
               info.ok() ? info->uuid : "",
               static_cast<int>(t.dtype()),
               t.shape(),
               mem->bytes,
               event->bytes,
               peers_.self.socket_path,
               peers_.self.worker_id,
               peers_.self.node_id};
  tl_exports.push_back(id);
  msgpack::sbuffer buf;
  msgpack::pack(buf, d);
  cache.assign(buf.data(), buf.size());
  Exported& e = exported_[id];
  e.tensor = shared;
  e.ready = std::move(ready).value();
  e.handle = mem->bytes;
  e.dtype = t.dtype();
  e.shape = t.shape();
  e.bytes = t.bytes();
  e.device = t.device();
  e.last_use = ++use_tick_;
  return cache;
}

gpu::Tensor GpuTasks::UnpackTensor(std::string_view bytes) {
  Descriptor d;
  try {
    msgpack::object_handle h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(d);
  } catch (const std::exception& e) {
    throw InvalidArgumentError(std::string("not a gpu::Tensor descriptor: ") + e.what());
  }
  auto& [version, id_field, pid, uuid, dtype, shape, mem, event, socket, worker, node] = d;
  const std::string& id = id_field;  // (a name of its own: lambdas below capture it)
  if (version != 1)
    throw InvalidArgumentError("a gpu::Tensor descriptor of version " + std::to_string(version));
  gpu::Context* ctx = CurrentOrNull();
  UniqueLock lock(mu_);
  if (pid == getpid()) {
    auto it = exported_.find(id);
    if (it == exported_.end())
      throw ObjectLostError("device object " + id + " is no longer held by this process");
    if (Status restored = RestoreLocked(id, it->second); !restored.ok()) {
      throw RuntimeError("device object " + id +
                         " cannot be restored from the host store: " + restored.message());
    }
    it->second.last_use = ++use_tick_;
    // Same process: the same memory; the task's streams wait for the work that made it, and
    // its free will wait for theirs.
    if (ctx != nullptr) {
      for (int d : ctx->devices()) {
        Status st = ctx->stream(d).Wait(*it->second.ready);
        if (!st.ok()) throw RuntimeError("cannot order on the tensor's event: " + st.message());
        it->second.tensor.AddUser(*backend_, ctx->stream(d));
      }
    }
    return it->second.tensor;
  }
  Status st = EnsureBackend();
  if (!st.ok())
    throw RuntimeError("a gpu::Tensor from process " + std::to_string(pid) +
                       " needs a GPU backend here: " + st.message());
  int device = -1;
  for (int i = 0; i < backend_->device_count(); ++i) {
    if (backend_->device(i)->uuid == uuid) device = i;
  }
  if (device < 0) {
    // On a GPU this process does not see (it holds others): its producer sends it here.
    lock.unlock();
    return Receive({socket, worker, node}, id, pid, static_cast<gpu::DType>(dtype), shape, ctx);
  }
  std::vector<gpu::Stream*> streams;  // every stream of the task (or the import stream) waits
  if (ctx != nullptr) {
    for (int d : ctx->devices()) streams.push_back(&ctx->stream(d));
  } else {
    auto s = ImportStream(device);
    if (!s.ok()) throw RuntimeError(s.status().message());
    streams.push_back(*s);
  }
  gpu::Stream* stream = streams.front();
  std::shared_ptr<Import> import = imports_[id].lock();
  if (import && import->registering.valid()) {
    // Another thread is counting this mapping at the producer: it may be used once that is done.
    std::shared_future<bool> registering = import->registering;
    lock.unlock();
    if (!registering.get()) {
      throw ObjectLostError("device object " + id + " is no longer held by its producer (process " +
                            std::to_string(pid) + ")");
    }
    lock.lock();
  }
  if (!import) {
    // Counted at the producer first (so it frees only after our release), which answers with
    // where the memory is now: restored to device memory, if it had spilled to the host store.
    import = std::shared_ptr<Import>(new Import{
        liveness_, backend_.get(), streams, nullptr, device, {socket, worker, node}, id});
    imports_[id] = import;
    std::string handle = mem;
    std::shared_ptr<std::promise<bool>> counted;
    auto forget = [&]() PRISM_REQUIRES(mu_) {
      auto it = imports_.find(id);
      if (it != imports_.end() && it->second.lock() == import) imports_.erase(it);
      if (counted) counted->set_value(false);
    };
    if (peers_.register_import && !socket.empty()) {
      auto register_import = peers_.register_import;
      counted = std::make_shared<std::promise<bool>>();
      import->registering = counted->get_future().share();
      lock.unlock();
      std::optional<std::string> answer = register_import(import->producer, id, "");
      lock.lock();
      if (!answer) {
        forget();
        throw ObjectLostError("device object " + id +
                              " is no longer held by its producer (process " + std::to_string(pid) +
                              ")");
      }
      import->registered = true;
      if (!answer->empty()) handle = *answer;
    }
    auto ptr = backend_->OpenIpc(gpu::IpcHandle{handle}, device);
    if (!ptr.ok()) {
      if (import->registered && peers_.release_import) peers_.release_import(import->producer, id);
      forget();
      throw ObjectLostError("device object " + id + " of process " + std::to_string(pid) + ": " +
                            ptr.status().message());
    }
    import->ptr = *ptr;
    if (counted) counted->set_value(true);
  } else {
    for (gpu::Stream* s : streams) {  // its users so far and now order the close
      if (std::find(import->streams.begin(), import->streams.end(), s) == import->streams.end()) {
        import->streams.push_back(s);
      }
    }
  }
  gpu::Backend* backend = backend_.get();
  lock.unlock();  // (an error below drops `import`, whose close takes the lock)
  // Ordered after the producer's work: its event, recorded when it made the tensor (or restored
  // it).
  auto ev = backend->OpenIpcEvent(gpu::IpcEventHandle{event});
  if (!ev.ok()) throw ObjectLostError("device object " + id + ": " + ev.status().message());
  for (gpu::Stream* s : streams) {
    st = s->Wait(**ev);
    if (!st.ok()) throw RuntimeError("cannot order on the tensor's event: " + st.message());
  }
  gpu::Tensor view = gpu::Tensor::View(static_cast<gpu::DType>(dtype), shape, device,
                                       backend->name() == "sim", import->ptr, stream, import);
  return view;
}

gpu::Tensor GpuTasks::Receive(const internal::OwnerAddress& producer, const std::string& id,
                              int64_t pid, gpu::DType dtype, std::vector<int64_t> shape,
                              gpu::Context* ctx) {
  std::string what = "device object " + id + " of process " + std::to_string(pid) +
                     " (on a GPU this process does not see)";
  if (Status available = DeviceTransferAvailable(); !available.ok())
    throw RuntimeError(what + ": " + available.message());
  if (!peers_.register_import || producer.socket_path.empty())
    throw RuntimeError(what + ": its producer's address is unknown");
  int device = 0;
  std::vector<gpu::Stream*> streams;  // the task's (or the import stream): they wait for it
  gpu::MemoryResource* memory = nullptr;
  gpu::Backend* backend = nullptr;
  {
    MutexLock lock(mu_);
    if (backend_->device_count() == 0)
      throw RuntimeError(what + ": this process has no GPU to receive it on");
    if (ctx != nullptr) {
      device = ctx->device();
      for (int d : ctx->devices()) streams.push_back(&ctx->stream(d));
      memory = &ctx->memory();
    } else {
      auto s = ImportStream(device);
      auto pool = backend_->memory(device);
      if (!s.ok() || !pool.ok())
        throw RuntimeError(what + ": " + (s.ok() ? pool.status() : s.status()).message());
      streams.push_back(*s);
      memory = TaskMemory(device, *pool);
    }
    backend = backend_.get();
  }
  gpu::Stream* stream = streams.front();
  auto tensor = gpu::Tensor::Empty(*backend, *memory, *stream, dtype, std::move(shape));
  if (!tensor.ok())
    throw RuntimeError(what + ": cannot allocate it here: " + tensor.status().message());
  moves_.Receive(
      peers_.self, producer, pid,
      [&](const std::string& group) {
        return peers_.register_import(producer, id, group).has_value();
      },
      *backend, device, *tensor, stream, what);
  if (streams.size() > 1) {  // the task's other streams wait for the receive
    auto ev = backend->CreateEvent(device);
    Status st = ev.ok() ? (*ev)->Record(*stream) : ev.status();
    for (size_t i = 1; i < streams.size() && st.ok(); ++i) st = streams[i]->Wait(**ev);
    if (!st.ok()) throw RuntimeError(what + ": cannot order on it: " + st.message());
  }
  return std::move(tensor).value();
}

void GpuTasks::QueueSend(const std::string& id, const WorkerId& importer,
                         const std::string& group) {
  moves_.QueueSend(id, importer, group);
}

Result<DeviceMoves::Source> GpuTasks::SendSource(const std::string& id) {
  MutexLock lock(mu_);
  auto it = exported_.find(id);
  if (it == exported_.end()) return Status::NotFound("no longer held here");
  PRISM_RETURN_IF_ERROR(RestoreLocked(id, it->second));  // (counted as imported: it stays)
  DeviceMoves::Source src;
  src.tensor = it->second.tensor;
  src.device = it->second.device;
  PRISM_ASSIGN_OR_RETURN(src.stream, ImportStream(src.device));
  src.backend = backend_.get();
  // After the work that made it (its event goes with the entry: waited on here).
  PRISM_RETURN_IF_ERROR(src.stream->Wait(*it->second.ready));
  return src;
}

Result<gpu::Backend*> GpuTasks::backend() {
  MutexLock lock(mu_);
  PRISM_RETURN_IF_ERROR(EnsureBackend());
  return backend_.get();
}

Result<std::pair<gpu::MemoryResource*, gpu::Stream*>> GpuTasks::OutsideTasks(int device) {
  MutexLock lock(mu_);
  PRISM_RETURN_IF_ERROR(EnsureBackend());
  PRISM_ASSIGN_OR_RETURN(gpu::MemoryResource * pool, backend_->memory(device));
  PRISM_ASSIGN_OR_RETURN(gpu::Stream * stream, ImportStream(device));
  return std::make_pair(TaskMemory(device, pool), stream);
}

size_t GpuTasks::exported_count() {
  MutexLock lock(mu_);
  return exported_.size();
}

void GpuTasks::CloseFinishedImports(bool wait) {
  std::vector<Closing> done;
  std::function<void(const internal::OwnerAddress&, const std::string&)> release;
  {
    MutexLock lock(mu_);
    release = peers_.release_import;
    for (auto it = closing_.begin(); it != closing_.end();) {
      bool finished = true;
      for (auto& e : it->done) {
        auto q = e->Query();
        finished = finished && (!q.ok() || *q);
      }
      if (wait || finished) {
        done.push_back(std::move(*it));
        it = closing_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Closing& c : done) {
    if (wait) {
      for (auto& e : c.done) (void)e->Synchronize();
    }
    {
      MutexLock lock(mu_);
      (void)backend_->CloseIpc(c.ptr);
    }
    {
      MutexLock lock(mu_);
      auto it = imports_.find(c.id);
      if (it != imports_.end() && it->second.expired()) imports_.erase(it);
    }
    if (c.registered && release) release(c.producer, c.id);
  }
}

// ---- spilling device objects to the host store ----

gpu::MemoryResource* GpuTasks::TaskMemory(int device, gpu::MemoryResource* pool) {
  auto& m = task_memory_[device];
  if (!m)
    m = std::make_unique<SpillingMemory>(pool,
                                         [this](int d, uint64_t bytes) { return Spill(d, bytes); });
  return m.get();
}

void GpuTasks::SetHostStore(std::shared_ptr<StoreClient> store, WorkerId self) {
  MutexLock lock(mu_);
  host_store_ = std::move(store);
  self_ = self;
}

uint64_t GpuTasks::Spill(int device, uint64_t bytes) {
  MutexLock lock(mu_);
  return SpillLocked(device, bytes, "");
}

uint64_t GpuTasks::SpillLocked(int device, uint64_t bytes, const std::string& keep) {
  if (!host_store_ || !backend_) return 0;
  uint64_t freed = 0;
  while (freed < bytes) {
    // The least recently used object that only this table holds (no task or actor of this
    // process has it) and no other process maps.
    Exported* victim = nullptr;
    std::string victim_id;
    for (auto& [id, e] : exported_) {
      // (Not one held through another library's DLPack tensor: that frees none of prism's memory,
      // and its deleter may want that library's lock, e.g. Python's.)
      if (id == keep || e.spilled || !e.tensor.valid() || e.device != device ||
          !e.imports.empty() || e.tensor.bytes() == 0 || e.tensor.holders() > 1 ||
          e.tensor.foreign()) {
        continue;
      }
      if (victim == nullptr || e.last_use < victim->last_use) {
        victim = &e;
        victim_id = id;
      }
    }
    if (victim == nullptr) break;
    Exported& e = *victim;
    size_t n = e.tensor.bytes();
    UniqueId r = RandomUniqueId();
    ObjectId host_id = PutObjectId(TaskId::FromBinary(r.Binary()), 1);
    auto dst = host_store_->Create(host_id, n, self_);
    if (!dst.ok()) {
      PRISM_LOG_WARN("cannot spill device object {} ({} bytes) to the host store: {}", victim_id, n,
                     dst.status().ToString());
      break;
    }
    Status st = e.tensor.stream()->CopyAsync(*dst, e.tensor.data(), n);
    if (st.ok()) st = e.tensor.stream()->Synchronize();
    if (st.ok()) st = host_store_->Seal(host_id);
    if (!st.ok()) {
      (void)host_store_->Abort(host_id);
      PRISM_LOG_WARN("cannot spill device object {}: {}", victim_id, st.ToString());
      break;
    }
    host_store_->Release(host_id);  // unpinned: the store may move it on to disk in turn
    e.spilled.reset(new HostCopy{host_store_, host_id});  // (in place: a temporary would delete it)
    e.tensor = gpu::Tensor();  // its device memory goes, on its stream after the copy
    freed += n;
    spill_stats_.spills++;
    PRISM_LOG_DEBUG("spilled device object {} ({} bytes) to the host store", victim_id, n);
  }
  return freed;
}

Status GpuTasks::RestoreLocked(const std::string& id, Exported& e) {
  if (!e.spilled) return Status::OK();
  PRISM_ASSIGN_OR_RETURN(gpu::MemoryResource * pool, backend_->memory(e.device));
  PRISM_ASSIGN_OR_RETURN(gpu::Stream * stream, ImportStream(e.device));
  auto views = host_store_->Get({e.spilled->id});
  if (!views[0].status.ok()) return views[0].status;
  auto unpin = [&]() PRISM_REQUIRES(mu_) { host_store_->Release(e.spilled->id); };
  Result<gpu::Tensor> t = gpu::Tensor::Empty(*backend_, *pool, *stream, e.dtype, e.shape);
  if (!t.ok() && t.status().code() == StatusCode::kOutOfMemory &&
      SpillLocked(e.device, views[0].size, id) > 0) {
    t = gpu::Tensor::Empty(*backend_, *pool, *stream, e.dtype, e.shape);
  }
  if (!t.ok()) {
    unpin();
    return t.status();
  }
  Status st = stream->CopyAsync(t->data(), views[0].data, views[0].size);
  if (st.ok()) st = e.ready->Record(*stream);  // its readers wait for the copy
  if (st.ok()) st = stream->Synchronize();     // (the host copy is unpinned after it)
  unpin();
  if (!st.ok()) return st;
  PRISM_ASSIGN_OR_RETURN(gpu::IpcHandle handle, pool->Export(t->data(), t->bytes()));
  e.tensor = std::move(t).value();
  e.handle = std::move(handle.bytes);
  e.spilled.reset();  // its host copy goes
  spill_stats_.restores++;
  PRISM_LOG_DEBUG("restored device object {} from the host store", id);
  return Status::OK();
}

GpuTasks::SpillStats GpuTasks::spill_stats() {
  MutexLock lock(mu_);
  SpillStats out = spill_stats_;
  for (const auto& [id, e] : exported_) {
    if (!e.spilled) continue;
    out.spilled_objects++;
    out.spilled_bytes += e.bytes;
  }
  return out;
}

size_t gpu::Context::Index(int device) const {
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (devices_[i] == device) return i;
  }
  throw InvalidArgumentError("the task holds devices 0.." + std::to_string(devices_.size() - 1) +
                             ", not device " + std::to_string(device));
}

}  // namespace prism

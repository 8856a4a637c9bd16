#include "worker/gpu_tasks.h"

#include <prism/errors.h>

#include "base/ids.h"

#include <msgpack.hpp>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <string>

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

GpuTasks::~GpuTasks() {
  {
    std::lock_guard<std::mutex> lock(liveness_->mu);
    liveness_->owner = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  closer_cv_.notify_all();
  if (closer_.joinable()) closer_.join();
  CloseFinishedImports(/*wait=*/true);
  std::lock_guard<std::mutex> lock(mu_);
  exported_.clear();
  import_streams_.clear();
  actor_context_.reset();
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
  std::lock_guard<std::mutex> lock(mu_);
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
        auto s = backend_->CreateStream(device, "prism gpu" + std::to_string(device) + " stream " + std::to_string(i));
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
    memories.push_back(*memory);
  }
  tl_gpu.context = std::make_shared<gpu::Context>(*backend_, devices, std::move(streams), std::move(memories), cap);
}

void GpuTasks::Leave(bool keep) {
  if (keep && tl_gpu.context) {
    std::lock_guard<std::mutex> lock(mu_);
    actor_context_ = tl_gpu.context;
  }
  tl_gpu = ThreadContext{};
}

Status GpuTasks::DeviceFault() {
  std::lock_guard<std::mutex> lock(mu_);
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
    throw RuntimeError("gpu::CurrentContext() is for tasks and actors that hold GPUs (num_gpus > 0)");
  }
  if (!tl_gpu.context) throw RuntimeError(tl_gpu.error);
  return *tl_gpu.context;
}

// ---- device objects ----

namespace {

// The descriptor a tensor travels as: (version, id, pid, device uuid, dtype, shape, memory
// handle, event handle).
using Descriptor = std::tuple<int, std::string, int64_t, std::string, int, std::vector<int64_t>, std::string,
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
    std::lock_guard<std::mutex> alive(liveness->mu);
    GpuTasks* owner = liveness->owner;
    if (owner == nullptr) return;  // the runtime is gone, and its mappings with it
    std::vector<std::unique_ptr<gpu::Event>> done;
    bool recorded = true;
    for (gpu::Stream* s : streams) {
      auto e = backend->CreateEvent(s->device());
      recorded = recorded && e.ok() && (*e)->Record(*s).ok();
      if (e.ok()) done.push_back(std::move(e).value());
    }
    std::lock_guard<std::mutex> lock(owner->mu_);
    if (recorded) {
      owner->closing_.push_back(Closing{std::move(done), ptr, producer, id, registered});
      if (!owner->closer_.joinable() && !owner->stopping_) owner->closer_ = std::thread([o = owner] { o->CloserLoop(); });
      owner->closer_cv_.notify_all();
    } else {
      (void)backend->CloseIpc(ptr);  // the device is gone anyway
    }
  }
};

void GpuTasks::CloserLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    closer_cv_.wait_for(lock, std::chrono::milliseconds(20));
    if (closing_.empty()) continue;
    lock.unlock();
    CloseFinishedImports(false);
    lock.lock();
  }
}

void GpuTasks::SetPeers(Peers peers) {
  std::lock_guard<std::mutex> lock(mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
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
  if (it == exported_.end() || !it->second.associated || it->second.objects > 0 || !it->second.imports.empty()) {
    return std::nullopt;
  }
  Exported gone = std::move(it->second);
  exported_.erase(it);
  return gone;
}

void GpuTasks::Forget(const std::vector<std::string>& ids) {
  std::vector<Exported> gone;
  std::lock_guard<std::mutex> lock(mu_);
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
    std::lock_guard<std::mutex> lock(mu_);
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

bool GpuTasks::AddImport(const std::string& id, const WorkerId& importer) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = exported_.find(id);
  if (it == exported_.end()) return false;
  it->second.imports[importer]++;
  return true;
}

void GpuTasks::RemoveImport(const std::string& id, const WorkerId& importer) {
  std::optional<Exported> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = exported_.find(id);
    if (it == exported_.end()) return;
    auto imp = it->second.imports.find(importer);
    if (imp != it->second.imports.end() && --imp->second <= 0) it->second.imports.erase(imp);
    gone = MaybeFreeLocked(id);
  }
}

void GpuTasks::ImporterDied(const WorkerId& importer) {
  std::vector<Exported> gone;
  std::lock_guard<std::mutex> lock(mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
  if (!cache.empty()) {  // (packing runs twice: measure, then write; and a tensor may be returned again)
    Descriptor known;
    msgpack::unpack(cache.data(), cache.size()).get().convert(known);
    auto it = exported_.find(std::get<1>(known));
    if (it != exported_.end()) {
      // Still held: its event now covers any work done on it since it was last passed on.
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
  if (!memory.ok()) throw RuntimeError("cannot pass this gpu::Tensor on: " + memory.status().message());
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
  Descriptor d{1, id, static_cast<int64_t>(getpid()), info.ok() ? info->uuid : "", static_cast<int>(t.dtype()),
               t.shape(), mem->bytes, event->bytes, peers_.self.socket_path, peers_.self.worker_id,
               peers_.self.node_id};
  tl_exports.push_back(id);
  msgpack::sbuffer buf;
  msgpack::pack(buf, d);
  cache.assign(buf.data(), buf.size());
  exported_[id] = Exported{shared, std::move(ready).value()};
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
  auto& [version, id, pid, uuid, dtype, shape, mem, event, socket, worker, node] = d;
  if (version != 1) throw InvalidArgumentError("a gpu::Tensor descriptor of version " + std::to_string(version));
  gpu::Context* ctx = CurrentOrNull();
  std::unique_lock<std::mutex> lock(mu_);
  if (pid == getpid()) {
    auto it = exported_.find(id);
    if (it == exported_.end()) throw ObjectLostError("device object " + id + " is no longer held by this process");
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
  if (!st.ok()) throw RuntimeError("a gpu::Tensor from process " + std::to_string(pid) + " needs a GPU backend here: " + st.message());
  int device = -1;
  for (int i = 0; i < backend_->device_count(); ++i) {
    if (backend_->device(i)->uuid == uuid) device = i;
  }
  if (device < 0) {
    throw RuntimeError("the gpu::Tensor is on GPU " + uuid + ", which this process does not see (it holds other GPUs); "
                       "moving tensors between GPUs of different processes comes with the collectives (NCCL)");
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
  auto ev = backend_->OpenIpcEvent(gpu::IpcEventHandle{event});
  if (!ev.ok()) throw ObjectLostError("device object " + id + ": " + ev.status().message());
  for (gpu::Stream* s : streams) {
    st = s->Wait(**ev);
    if (!st.ok()) throw RuntimeError("cannot order on the tensor's event: " + st.message());
  }
  std::shared_ptr<Import> import = imports_[id].lock();
  bool fresh = !import;
  if (!fresh && import->registering.valid()) {
    // Another thread is counting this mapping at the producer: it may be used once that is done.
    std::shared_future<bool> registering = import->registering;
    lock.unlock();
    if (!registering.get()) {
      throw ObjectLostError("device object " + id + " is no longer held by its producer (process " +
                            std::to_string(pid) + ")");
    }
    lock.lock();
  }
  if (fresh) {
    auto ptr = backend_->OpenIpc(gpu::IpcHandle{mem}, device);
    if (!ptr.ok()) throw ObjectLostError("device object " + id + " of process " + std::to_string(pid) + ": " + ptr.status().message());
    import = std::shared_ptr<Import>(new Import{liveness_, backend_.get(), streams, *ptr, device, {socket, worker, node}, id});
    imports_[id] = import;
  } else {
    for (gpu::Stream* s : streams) {  // its users so far and now order the close
      if (std::find(import->streams.begin(), import->streams.end(), s) == import->streams.end()) {
        import->streams.push_back(s);
      }
    }
  }
  gpu::Tensor view = gpu::Tensor::View(static_cast<gpu::DType>(dtype), shape, device, backend_->name() == "sim",
                                       import->ptr, stream, import);
  if (fresh && peers_.register_import && !socket.empty()) {
    // Counted at the producer before this task can reply, so it frees only after our release.
    auto register_import = peers_.register_import;
    internal::OwnerAddress producer = import->producer;
    auto counted = std::make_shared<std::promise<bool>>();
    import->registering = counted->get_future().share();
    lock.unlock();
    bool ok = register_import(producer, id);
    counted->set_value(ok);
    lock.lock();
    if (!ok) {
      auto it = imports_.find(id);
      if (it != imports_.end() && it->second.lock() == import) imports_.erase(it);
      throw ObjectLostError("device object " + id + " is no longer held by its producer (process " +
                            std::to_string(pid) + ")");
    }
    import->registered = true;
  }
  return view;
}

Result<gpu::Backend*> GpuTasks::backend() {
  std::lock_guard<std::mutex> lock(mu_);
  PRISM_RETURN_IF_ERROR(EnsureBackend());
  return backend_.get();
}

size_t GpuTasks::exported_count() {
  std::lock_guard<std::mutex> lock(mu_);
  return exported_.size();
}

void GpuTasks::CloseFinishedImports(bool wait) {
  std::vector<Closing> done;
  std::function<void(const internal::OwnerAddress&, const std::string&)> release;
  {
    std::lock_guard<std::mutex> lock(mu_);
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
      std::lock_guard<std::mutex> lock(mu_);
      (void)backend_->CloseIpc(c.ptr);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = imports_.find(c.id);
      if (it != imports_.end() && it->second.expired()) imports_.erase(it);
    }
    if (c.registered && release) release(c.producer, c.id);
  }
}

size_t gpu::Context::Index(int device) const {
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (devices_[i] == device) return i;
  }
  throw InvalidArgumentError("the task holds devices 0.." + std::to_string(devices_.size() - 1) + ", not device " +
                             std::to_string(device));
}

}  // namespace prism

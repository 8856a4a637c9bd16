#include "worker/gpu_tasks.h"

#include <prism/errors.h>

#include <string>

namespace prism {
namespace {

struct ThreadContext {
  bool holds_gpus = false;
  std::shared_ptr<gpu::Context> context;
  std::string error;  // why there is no context although the task holds GPUs
};
thread_local ThreadContext tl_gpu;

}  // namespace

GpuTasks::~GpuTasks() {
  std::lock_guard<std::mutex> lock(mu_);
  actor_context_.reset();
  streams_.clear();  // before the backend they belong to
  backend_.reset();
}

Status GpuTasks::EnsureBackend() {
  if (!tried_) {
    tried_ = true;
    auto b = gpu::CreateBackend(gpu::BackendConfigFromEnv());
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
  int device = devices[0];
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
  gpu::Stream& stream = *pool[next_stream_[device]++ % pool.size()];
  auto memory = backend_->memory(device);
  if (!memory.ok()) {
    tl_gpu.error = "no device memory: " + memory.status().message();
    return;
  }
  std::optional<uint64_t> cap;
  if (gpu_memory > 0) cap = gpu_memory;
  (*memory)->set_limit(cap);
  tl_gpu.context = std::make_shared<gpu::Context>(*backend_, device, devices, stream, **memory, cap);
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

}  // namespace prism

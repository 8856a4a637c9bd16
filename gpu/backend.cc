#include <dlfcn.h>
#include <prism/gpu/backend.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "base/logging.h"
#include "base/process_info.h"
#include "gpu/counting_backend.h"
#include "gpu/sim/sim_backend.h"

namespace prism::gpu {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
  }
  return 1;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
  }
  return "?";
}

Result<DeviceBuffer> DeviceBuffer::Allocate(MemoryResource& memory, size_t bytes, Stream& stream) {
  PRISM_ASSIGN_OR_RETURN(void* p, memory.Allocate(bytes, stream));
  DeviceBuffer b;
  b.memory_ = &memory;
  b.stream_ = &stream;
  b.data_ = p;
  b.size_ = bytes;
  return b;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) (void)Free();
    memory_ = std::exchange(other.memory_, nullptr);
    stream_ = std::exchange(other.stream_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (!data_) return;
  Status st = Free();
  if (!st.ok()) PRISM_LOG_WARN("freeing a device buffer failed: {}", st.ToString());
}

Status DeviceBuffer::Free() {
  if (!data_) return Status::OK();
  void* p = std::exchange(data_, nullptr);
  return memory_->Deallocate(p, std::exchange(size_, 0), *stream_);
}

BackendConfig BackendConfigFromEnv() {
  BackendConfig c;
  if (const char* k = std::getenv("PRISM_GPU_BACKEND")) c.kind = k;
  if (const char* t = std::getenv("PRISM_GPU_TOPOLOGY")) c.topology = t;
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) c.visible = std::string(v);
  if (const char* n = std::getenv("PRISM_GPU_COUNT_CALLS")) c.count_calls = std::string(n) == "1";
  return c;
}

namespace {

// The cuda backend lives in its own library next to libprism (libprism_gpu_cuda.so), loaded
// only when asked for, so that nothing else needs the CUDA runtime.
using CreateCudaFn = int (*)(Backend** out, char* error, size_t error_size);

Result<std::unique_ptr<Backend>> CreateCuda() {
  Result<void*> opened = OpenBesideLibprism("libprism_gpu_cuda.so");
  if (!opened.ok()) {
    return Status::Unavailable(
        "the cuda backend did not load (prism built without CUDA, or no CUDA runtime): " +
        opened.status().message());
  }
  void* lib = *opened;
  auto create = reinterpret_cast<CreateCudaFn>(dlsym(lib, "prism_gpu_cuda_create"));
  if (!create) return Status::Internal("libprism_gpu_cuda.so has no prism_gpu_cuda_create");
  Backend* backend = nullptr;
  char error[512] = {};
  if (create(&backend, error, sizeof error) != 0 || !backend) return Status::Unavailable(error);
  return std::unique_ptr<Backend>(backend);  // the library stays loaded for the process
}

Result<std::unique_ptr<Backend>> CreateSim(const BackendConfig& config) {
  sim::SimOptions options;
  PRISM_ASSIGN_OR_RETURN(options.topology,
                         Topology::Load(config.topology.empty() ? "h100-sxm-8" : config.topology));
  options.visible = config.visible;
  PRISM_RETURN_IF_ERROR(sim::ApplySimEnv(options));
  PRISM_ASSIGN_OR_RETURN(auto sim, sim::SimBackend::Create(std::move(options)));
  return std::unique_ptr<Backend>(std::move(sim));
}

}  // namespace

Result<std::unique_ptr<Backend>> CreateBackend(const BackendConfig& config) {
  if (config.count_calls) {
    BackendConfig plain = config;
    plain.count_calls = false;
    PRISM_ASSIGN_OR_RETURN(auto inner, CreateBackend(plain));
    return MakeCountingBackend(std::move(inner));
  }
  if (config.kind == "sim") return CreateSim(config);
  if (config.kind == "cuda") return CreateCuda();
  if (config.kind.empty() || config.kind == "auto") {
    auto cuda = CreateCuda();
    if (cuda.ok() && cuda.value()->device_count() > 0) return cuda;
    return Status::NotFound(
        "no GPU backend: no CUDA device here (set PRISM_GPU_BACKEND=sim for simulated "
        "devices)");
  }
  return Status::InvalidArgument("PRISM_GPU_BACKEND is '" + config.kind +
                                 "'; it must be sim, cuda or auto");
}

}  // namespace prism::gpu

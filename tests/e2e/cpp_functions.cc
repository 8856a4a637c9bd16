// C++ remote functions in a shared library of their own: the generic C++ worker loads it from the
// code search path, for Python drivers (prism.cpp_function) and C++ drivers that do not link it.
#include <prism/gpu.h>
#include <prism/prism.h>

#include <map>
#include <string>
#include <vector>

namespace {

int CrossSquare(int x) { return x * x; }
std::string CrossGreet(std::string name) { return "hello " + name; }
std::map<std::string, double> CrossStats(std::vector<double> values) {
  double sum = 0;
  for (double v : values) sum += v;
  return {{"count", static_cast<double>(values.size())}, {"sum", sum}};
}

// A GPU task whose result stays on the device: 0, 1, ..., n-1 as float32 in a 2 x (n/2) tensor.
prism::gpu::Tensor CrossRange(int n) {
  prism::gpu::Context& ctx = prism::gpu::CurrentContext();
  auto t = prism::gpu::Tensor::Empty(ctx, prism::gpu::DType::kFloat32, {2, n / 2}).value();
  std::vector<float> host(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) host[static_cast<size_t>(i)] = static_cast<float>(i);
  if (!ctx.stream().CopyAsync(t.data(), host.data(), host.size() * sizeof(float)).ok() ||
      !ctx.stream().Synchronize().ok()) {  // (host is about to go)
    throw std::runtime_error("copy failed");
  }
  return t;
}

// The sum of a float32 device tensor (one passed from Python, say), computed on the task's GPU.
double CrossSum(prism::gpu::Tensor t) {
  prism::gpu::Context& ctx = prism::gpu::CurrentContext();
  auto out = prism::gpu::Tensor::Empty(ctx, prism::gpu::DType::kFloat32, {1}).value();
  if (!prism::gpu::ops::Reduce(ctx.backend(), ctx.stream(), prism::gpu::ReduceOp::kSum, t.array(),
                               out.array())
           .ok()) {
    throw std::runtime_error("reduce failed");
  }
  float host = 0;
  if (!ctx.stream().CopyAsync(&host, out.data(), sizeof host).ok() ||
      !ctx.stream().Synchronize().ok()) {
    throw std::runtime_error("copy failed");
  }
  return host;
}

}  // namespace

PRISM_REMOTE(CrossSquare, CrossGreet, CrossStats, CrossRange, CrossSum);

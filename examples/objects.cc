// Objects and their lifetime: a large value put once into the node's shared-memory store and
// read in place by workers, a ref passed inside an argument, and a ref returned by a task.
#include <prism/prism.h>

#include <cstdio>
#include <numeric>
#include <vector>

// Reads the bytes where they lie in the store: no copy, even though this runs in a worker.
uint64_t Checksum(prism::Buffer bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), uint64_t{0});
}
PRISM_REMOTE(Checksum);

// Gets refs that arrived inside a value; the task keeps them alive while it runs.
uint64_t SumAll(std::vector<prism::ObjectRef<prism::Buffer>> parts) {
  uint64_t total = 0;
  for (const auto& p : parts) total += Checksum(prism::Get(p));
  return total;
}
PRISM_REMOTE(SumAll);

// Creates an object in the worker and hands back a ref: the caller borrows it.
prism::ObjectRef<std::vector<int>> MakeTable(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return prism::Put(v);
}
PRISM_REMOTE(MakeTable);

int main() {
  prism::Init({.object_store_memory = uint64_t{512} << 20});
  std::vector<uint8_t> data(64 << 20, 1);  // 64 MiB
  // Written once into the store; `data` could go now.
  auto blob = prism::Put(prism::Buffer::View(data.data(), data.size()));
  std::printf("checksum in a worker: %llu\n",
              static_cast<unsigned long long>(prism::Get(prism::Task(Checksum).Remote(blob))));

  auto parts = std::vector{blob, prism::Put(prism::Buffer::View(data.data(), 1 << 20))};
  auto sum = prism::Task(SumAll).Remote(parts);
  parts.clear();  // the running task still holds both objects
  std::printf("sum over nested refs: %llu\n", static_cast<unsigned long long>(prism::Get(sum)));

  prism::ObjectRef<std::vector<int>> table = prism::Get(prism::Task(MakeTable).Remote(5));
  std::printf("table made in a worker has %zu entries\n", prism::Get(table).size());

  blob = {};
  auto stats = prism::GetObjectStoreStats();
  std::printf("object store: %llu objects, %llu of %llu MiB used\n",
              static_cast<unsigned long long>(stats.num_objects),
              static_cast<unsigned long long>(stats.used >> 20),
              static_cast<unsigned long long>(stats.capacity >> 20));
  prism::Shutdown();
}

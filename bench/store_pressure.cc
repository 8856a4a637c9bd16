// The object store under pressure: how long the node daemon takes to answer small requests while
// it spills a large object to disk to make room for another.
//
//   store_pressure [--spill-mib 768] [--store-mib 1024]
//
// One thread puts an object that needs a spill of `spill-mib` MiB; meanwhile the main thread
// times small daemon requests (object store stats, a 128 KiB put) one after the other.
#include <prism/prism.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  CLI::App app{"prism object store under pressure"};
  uint64_t spill_mib = 768, store_mib = 1024;
  app.add_option("--spill-mib", spill_mib, "the object that must be spilled, MiB")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--store-mib", store_mib, "the object store, MiB")->check(CLI::Range(64, 1 << 20));
  CLI11_PARSE(app, argc, argv);
  const uint64_t mib = 1 << 20;
  prism::Init({.num_cpus = 1, .object_store_memory = store_mib * mib});
  std::vector<uint8_t> big(spill_mib * mib, 7);
  auto first = prism::Put(prism::Buffer::View(big.data(), big.size()));
  // The second does not fit beside the first: the first is written to disk for it.
  const uint64_t second_bytes = (store_mib - spill_mib) * mib + 64 * mib;
  std::vector<uint8_t> second_src(second_bytes, 8);
  std::atomic<bool> done{false};
  Clock::time_point put_start = Clock::now(), put_end;
  std::thread putter([&] {
    auto second = prism::Put(prism::Buffer::View(second_src.data(), second_src.size()));
    put_end = Clock::now();
    done = true;
  });
  std::vector<double> stats_us, put_us;
  std::vector<uint8_t> small(128 << 10, 1);
  while (!done) {
    auto t0 = Clock::now();
    (void)prism::GetObjectStoreStats();
    auto t1 = Clock::now();
    (void)prism::Put(prism::Buffer::View(small.data(), small.size()));
    auto t2 = Clock::now();
    stats_us.push_back(Micros(t1 - t0));
    put_us.push_back(Micros(t2 - t1));
  }
  putter.join();
  auto s = prism::GetObjectStoreStats();
  bool spilled = s.spills_total > 0;
  prism::Buffer back = prism::Get(first);  // read back from disk
  bool intact =
      back.size() == big.size() && back.data()[0] == 7 && back.data()[back.size() - 1] == 7;
  std::printf(
      "spill of %llu MiB (spilled: %s, read back intact: %s): put needing it took %.0f ms\n",
      static_cast<unsigned long long>(spill_mib), spilled ? "yes" : "NO", intact ? "yes" : "NO",
      Micros(put_end - put_start) / 1000);
  std::printf("daemon stats request during it: %zu answered, p50 %.0f us, max %.0f us\n",
              stats_us.size(), Percentile(stats_us, 0.5),
              stats_us.empty() ? 0 : *std::max_element(stats_us.begin(), stats_us.end()));
  std::printf("128 KiB put during it: %zu done, p50 %.0f us, max %.0f us\n", put_us.size(),
              Percentile(put_us, 0.5),
              put_us.empty() ? 0 : *std::max_element(put_us.begin(), put_us.end()));
  prism::Shutdown();
  return spilled && intact ? 0 : 1;
}

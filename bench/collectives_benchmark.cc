// The collectives benchmark, in the manner of nccl-tests: for each size, each operation's time,
// algorithm bandwidth and bus bandwidth (allreduce: algbw x 2(n-1)/n; allgather and reduce-scatter:
// x (n-1)/n; broadcast: x 1), with every result checked. Next to prism's allreduce, raw Gloo calls
// on the same processes and connections (the group's own Gloo context) give the floor prism is
// measured against.
//
//   collectives_benchmark [--ranks 2] [--min-bytes 8] [--max-bytes 1073741824] [--step 2] [--ops
//   allreduce,...]
#include <gloo/allreduce.h>
#include <prism/collective.h>
#include <prism/prism.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "collectives/internal.h"

namespace {

namespace col = prism::collective;
using Clock = std::chrono::steady_clock;

// Iterations for a size: enough to be timed well, few for the largest.
int Iterations(size_t bytes) {
  if (bytes >= (256u << 20)) return 3;
  if (bytes >= (16u << 20)) return 10;
  if (bytes >= (1u << 20)) return 100;
  return 200;
}

class Rank {
 public:
  // Seconds per call of `op` on `bytes` of float32 through prism (the median of 7 rounds), and for
  // allreduce the medians of prism's calls and of raw gloo::allreduce calls of the same buffers on
  // the group's own connections, made in turn; -1 when a result was wrong. op: allreduce,
  // allgather, reducescatter, broadcast.
  std::vector<double> Time(std::string group, std::string op, int64_t bytes) {
    col::Group& g = col::GetGroup(group);
    int n = g.size(), r = g.rank();
    size_t count = static_cast<size_t>(bytes) / sizeof(float);
    // nccl-tests' sizes: allgather's is the output, reduce-scatter's the input.
    size_t in_count = op == "allgather" ? count / n : count;
    size_t out_count = op == "reducescatter" ? count / n : count;
    if (in_count == 0 || out_count == 0) return {0, 0};
    std::vector<float> in(in_count, float(r + 1)), out(out_count, 0.0f);
    std::shared_ptr<gloo::Context> raw = col::internal::GlooContextOf(g);
    auto prism_once = [&] {
      if (op == "allreduce") {
        g.AllReduce(in.data(), out.data(), count, col::DType::kFloat32, col::ReduceOp::kSum);
      } else if (op == "allgather") {
        g.AllGather(in.data(), out.data(), in_count, col::DType::kFloat32);
      } else if (op == "reducescatter") {
        g.ReduceScatter(in.data(), out.data(), out_count, col::DType::kFloat32,
                        col::ReduceOp::kSum);
      } else {
        std::fill(out.begin(), out.end(), r == 0 ? 1.0f : 0.0f);
        g.Broadcast(out.data(), count, col::DType::kFloat32, 0);
      }
    };
    auto raw_once = [&] {
      gloo::AllreduceOptions opts(raw);
      opts.setInput(in.data(), count);
      opts.setOutput(out.data(), count);
      opts.setReduceFunction([](void* o, const void* a, const void* b, size_t k) {
        auto* x = static_cast<float*>(o);
        const auto* p = static_cast<const float*>(a);
        const auto* q = static_cast<const float*>(b);
        for (size_t i = 0; i < k; ++i) x[i] = p[i] + q[i];
      });
      opts.setTag(0x40000000u + tag_++);  // (apart from the group's own tags)
      gloo::allreduce(opts);
    };
    auto expect = [&](size_t i) -> float {
      if (op == "allgather") return float(i / in_count + 1);
      if (op == "broadcast") return 1.0f;
      return float(n * (n + 1) / 2);
    };
    auto correct = [&] {
      for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] != expect(i)) return false;
      }
      return true;
    };
    bool with_raw = op == "allreduce" && raw;
    prism_once();  // warm-up
    if (!correct()) return {-1, -1};
    if (with_raw) {
      std::fill(out.begin(), out.end(), 0.0f);
      raw_once();
      if (!correct()) return {-1, -1};
    }
    int iters = Iterations(static_cast<size_t>(bytes));
    auto timed = [&](auto once) {
      g.Barrier();
      auto t0 = Clock::now();
      for (int i = 0; i < iters; ++i) once();
      return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
    };
    std::vector<double> mine, theirs;
    if (with_raw) {
      // Call by call in turn, each timed on its own, medians of each: both see the same machine
      // at the same moments (this one is small and busy; rounds of one then the other drift apart).
      g.Barrier();
      for (int i = 0; i < 7 * iters; ++i) {
        auto t0 = Clock::now();
        prism_once();
        auto t1 = Clock::now();
        raw_once();
        auto t2 = Clock::now();
        mine.push_back(std::chrono::duration<double>(t1 - t0).count());
        theirs.push_back(std::chrono::duration<double>(t2 - t1).count());
      }
    } else {
      for (int round = 0; round < 7; ++round) mine.push_back(timed(prism_once));
    }
    if (!correct()) return {-1, -1};
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    return {mine[mine.size() / 2], with_raw ? theirs[theirs.size() / 2] : 0.0};
  }

 private:
  uint32_t tag_ = 1;
};
Rank* MakeRank() { return new Rank(); }
PRISM_REMOTE(MakeRank, &Rank::Time);

std::string Size(int64_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%lld MiB", static_cast<long long>(bytes >> 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof buf, "%lld KiB", static_cast<long long>(bytes >> 10));
  } else {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  }
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  CLI::App app{"prism collectives benchmark (gloo)"};
  int ranks = 2;
  int64_t min_bytes = 8, max_bytes = int64_t{1} << 30;
  std::vector<std::string> ops{"allreduce", "allgather", "reducescatter", "broadcast"};
  int step = 2;
  app.add_option("--ranks", ranks, "ranks (one actor each)");
  app.add_option("--min-bytes", min_bytes);
  app.add_option("--max-bytes", max_bytes);
  app.add_option("--ops", ops)->delimiter(',');
  app.add_option("--step", step, "size factor from one row to the next (nccl-tests' -f)")
      ->check(CLI::Range(2, 1024));
  CLI11_PARSE(app, argc, argv);
  prism::Init({.num_cpus = double(ranks)});
  std::vector<prism::ActorHandle<Rank>> members;
  for (int i = 0; i < ranks; ++i) members.push_back(prism::Actor(MakeRank).Remote());
  col::CreateGroup(members, col::Backend::kGloo, "bench", {.timeout = std::chrono::minutes(5)});
  auto run = [&](const std::string& op, int64_t bytes) {
    std::vector<prism::ObjectRef<std::vector<double>>> refs;
    for (auto& m : members)
      refs.push_back(m.Task(&Rank::Time).Remote(std::string("bench"), op, bytes));
    std::vector<double> worst{0, 0};
    for (auto& r : refs) {
      std::vector<double> t = prism::Get(r);
      if (t[0] < 0) return std::vector<double>{-1, -1};
      worst[0] = std::max(worst[0], t[0]);  // the slowest rank's time is the operation's
      worst[1] = std::max(worst[1], t[1]);
    }
    return worst;
  };
  double n = ranks;
  std::printf("# prism collectives benchmark: gloo, %d ranks (actors) on one node, float32, sum\n",
              ranks);
  std::printf("%-10s %-14s %12s %10s %10s %7s   %12s %10s %9s\n", "size", "op", "time us",
              "algbw GB/s", "busbw GB/s", "check", "raw gloo us", "raw busbw", "prism/raw");
  int failures = 0;
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= step) {
    for (const std::string& op : ops) {
      std::vector<double> times = run(op, bytes);
      double t = times[0];
      if (t < 0) {
        std::printf("%-10s %-14s %12s\n", Size(bytes).c_str(), op.c_str(), "WRONG");
        ++failures;
        continue;
      }
      double factor = op == "allreduce" ? 2 * (n - 1) / n : op == "broadcast" ? 1 : (n - 1) / n;
      double algbw = t > 0 ? bytes / t / 1e9 : 0;
      std::printf("%-10s %-14s %12.1f %10.3f %10.3f %7s", Size(bytes).c_str(), op.c_str(), t * 1e6,
                  algbw, algbw * factor, "ok");
      if (double raw = times[1]; op == "allreduce" && raw > 0) {
        std::printf("   %12.1f %10.3f %8.1f%%", raw * 1e6, bytes / raw / 1e9 * factor,
                    100.0 * raw / t);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  std::printf(
      "(prism/raw: raw Gloo's time over prism's, 100%% = the same; target: within 5%% at >= 1 "
      "MiB)\n");
  prism::Shutdown();
  return failures == 0 ? 0 : 1;
}

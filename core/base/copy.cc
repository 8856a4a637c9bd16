#include <prism/internal/copy.h>
#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace prism::internal {

namespace {

constexpr size_t kStreamingCopyBytes = size_t{1} << 20;
// Copies this large are split over threads: one core does not saturate memory bandwidth (on the
// 2-vCPU development VM one thread copies 9-10 GB/s, two 13 GB/s). Thread start-up (~50 us) is
// lost in a copy of this size (~3 ms).
constexpr size_t kParallelCopyBytes = size_t{32} << 20;
constexpr size_t kMaxCopyThreads = 4;

size_t CopyThreads() {
  static const size_t n = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    size_t cpus =
        sched_getaffinity(0, sizeof(set), &set) == 0 ? static_cast<size_t>(CPU_COUNT(&set)) : 1;
    return std::clamp<size_t>(cpus, 1, kMaxCopyThreads);
  }();
  return n;
}

void CopyOneThread(void* dst_v, const void* src_v, size_t n) {
#if defined(__x86_64__)
  if (n >= kStreamingCopyBytes) {
    auto* dst = static_cast<char*>(dst_v);
    const auto* src = static_cast<const char*>(src_v);
    const size_t head = (64 - (reinterpret_cast<uintptr_t>(dst) & 63)) & 63;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    // Unaligned loads, aligned non-temporal stores (SSE2: every x86-64 CPU has it).
    for (size_t blocks = n / 64; blocks > 0; --blocks) {
      __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + 1);
      __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + 2);
      __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + 3);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst) + 1, b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst) + 2, c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst) + 3, d);
      src += 64;
      dst += 64;
    }
    _mm_sfence();  // the stores are visible before the object is sealed
    std::memcpy(dst, src, n % 64);
    return;
  }
#endif
  std::memcpy(dst_v, src_v, n);
}

}  // namespace

void CopyBytes(void* dst_v, const void* src_v, size_t n) {
  const size_t threads = n >= kParallelCopyBytes ? CopyThreads() : 1;
  if (threads <= 1) return CopyOneThread(dst_v, src_v, n);
  auto* dst = static_cast<char*>(dst_v);
  const auto* src = static_cast<const char*>(src_v);
  const size_t part = (n / threads) & ~size_t{63};
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  try {
    for (size_t i = 1; i < threads; ++i) {
      const size_t off = part * i, len = i + 1 == threads ? n - off : part;
      helpers.emplace_back([=] { CopyOneThread(dst + off, src + off, len); });
    }
  } catch (const std::system_error&) {
    // No thread to be had: the helpers that started copy their parts, this thread the rest.
    const size_t done_from = part * (helpers.size() + 1);
    CopyOneThread(dst + done_from, src + done_from, n - done_from);
  }
  CopyOneThread(dst, src, part);
  for (auto& t : helpers) t.join();
}

}  // namespace prism::internal

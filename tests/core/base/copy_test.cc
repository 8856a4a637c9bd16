#include <gtest/gtest.h>
#include <prism/internal/copy.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace prism::internal {
namespace {

// Every size class (memcpy, streaming, split over threads) at source and destination offsets
// that differ within a cache line, with guard bytes on both sides of the destination.
TEST(CopyBytes, CopiesExactlyAtAnyAlignmentAndSize) {
  const std::vector<size_t> sizes = {0,
                                     1,
                                     63,
                                     64,
                                     65,
                                     4095,
                                     (size_t{1} << 20) - 1,
                                     size_t{1} << 20,
                                     (size_t{1} << 20) + 37,
                                     (size_t{33} << 20) + 5};
  std::vector<uint8_t> src((size_t{33} << 20) + 200), dst(src.size() + 200);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  for (size_t n : sizes) {
    for (size_t src_off : {size_t{0}, size_t{16}, size_t{61}}) {
      for (size_t dst_off : {size_t{64}, size_t{80}, size_t{127}}) {
        std::fill(dst.begin(), dst.end(), 0xEE);
        CopyBytes(dst.data() + dst_off, src.data() + src_off, n);
        ASSERT_EQ(dst[dst_off - 1], 0xEE) << "wrote before the destination (n " << n << ")";
        ASSERT_EQ(dst[dst_off + n], 0xEE) << "wrote past the destination (n " << n << ")";
        ASSERT_EQ(0, std::memcmp(dst.data() + dst_off, src.data() + src_off, n))
            << "n " << n << ", src +" << src_off << ", dst +" << dst_off;
      }
    }
  }
}

}  // namespace
}  // namespace prism::internal

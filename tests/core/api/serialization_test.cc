#include <gtest/gtest.h>
#include <prism/buffer.h>
#include <prism/serialization.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <tuple>

namespace prism {
namespace {

// Writes an encoded value to a 64-byte aligned block, as the object store does.
std::shared_ptr<char> WriteAligned(const internal::EncodedValue& v) {
  std::shared_ptr<char> p(static_cast<char*>(std::aligned_alloc(64, (v.size + 63) / 64 * 64 + 64)),
                          [](char* c) { std::free(c); });
  v.write(p.get());
  return p;
}

TEST(SerializationTest, EncodeMeasuresExactlyWhatItWrites) {
  std::map<std::string, std::vector<double>> value{{"a", {1, 2, 3}}, {"b", {}}};
  auto enc = internal::Encode(value);
  std::string bytes = enc.ToString();
  EXPECT_EQ(bytes.size(), enc.size);
  EXPECT_EQ((internal::Unpack<std::map<std::string, std::vector<double>>>(bytes)), value);
}

TEST(SerializationTest, BuffersAreAlignedWhereverTheyAreNested) {
  std::vector<double> xs(1000);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i) * 0.5;
  std::vector<uint8_t> odd(77, 9);
  auto value =
      std::make_tuple(std::string("abc"), 7, Buffer::ViewOf(xs), Buffer::View(odd.data(), 3),
                      std::vector<Buffer>{Buffer::ViewOf(xs)});
  auto enc = internal::Encode(value);
  auto block = WriteAligned(enc);
  std::shared_ptr<const void> keep = block;
  auto back = internal::Unpack<decltype(value)>(std::string_view(block.get(), enc.size), keep);
  const Buffer& b = std::get<2>(back);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
  EXPECT_GE(b.data(), reinterpret_cast<const uint8_t*>(block.get())) << "a view, not a copy";
  EXPECT_LT(b.data(), reinterpret_cast<const uint8_t*>(block.get()) + enc.size);
  auto span = b.as<double>();
  ASSERT_EQ(span.size(), xs.size());
  EXPECT_EQ(span[999], 499.5);
  EXPECT_EQ(std::get<3>(back).size(), 3u);
  EXPECT_EQ(std::get<3>(back).data()[2], 9);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(std::get<4>(back)[0].data()) % 64, 0u);
  EXPECT_EQ(std::get<4>(back)[0], Buffer::ViewOf(xs));
}

TEST(SerializationTest, TypedViewsRefuseBadShapes) {
  std::vector<uint8_t> bytes(10, 0);
  EXPECT_THROW(Buffer::View(bytes.data(), 10).as<double>(), InvalidArgumentError);
  EXPECT_THROW(Buffer::View(bytes.data() + 1, 8).as<double>(), InvalidArgumentError);
  EXPECT_EQ(Buffer::View(bytes.data(), 10).as<uint8_t>().size(), 10u);
}

TEST(SerializationTest, BufferDecodedWithoutASourceCopies) {
  std::vector<uint8_t> bytes(100, 4);
  std::string enc = internal::Pack(Buffer::ViewOf(bytes));
  Buffer b = internal::Unpack<Buffer>(enc);
  enc.assign(enc.size(), 'x');  // the Buffer must not point into it
  EXPECT_EQ(b.size(), 100u);
  EXPECT_EQ(b.data()[99], 4);
}

TEST(SerializationTest, PlainBinAndStrReadAsBuffers) {
  EXPECT_EQ(internal::Unpack<Buffer>(internal::Pack(std::string("hey"))).view(), "hey");
  EXPECT_EQ(internal::Unpack<Buffer>(internal::Pack(std::vector<char>{'a', 'b'})).view(), "ab");
  EXPECT_THROW(internal::Unpack<Buffer>(internal::Pack(5)), internal::DecodeError);
}

}  // namespace
}  // namespace prism

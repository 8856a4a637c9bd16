#include "rpc/frame.h"

#include <gtest/gtest.h>

#include <cstring>

namespace prism::rpc {
namespace {

Envelope Sample(uint64_t id) {
  Envelope e;
  e.mutable_status_request()->set_request_id(id);
  return e;
}

void Feed(FrameDecoder& d, const std::string& bytes) {
  size_t avail = 0;
  char* p = d.WritableSpace(bytes.size(), &avail);
  ASSERT_GE(avail, bytes.size());
  std::memcpy(p, bytes.data(), bytes.size());
  d.Commit(bytes.size());
}

TEST(FrameTest, SplitsBatchedAndPartialFrames) {
  std::string wire;
  for (uint64_t i = 1; i <= 50; ++i) AppendFrame(Sample(i), &wire);
  FrameDecoder d(kDefaultMaxFrameBytes);
  std::vector<uint64_t> got;
  // Feed one byte at a time: every frame boundary is crossed mid-read.
  for (char c : wire) {
    Feed(d, std::string(1, c));
    ASSERT_TRUE(d.Drain([&](Envelope& e) {
                   got.push_back(e.status_request().request_id());
                   return true;
                 }).ok());
  }
  ASSERT_EQ(got.size(), 50u);
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(got[i], i + 1);
}

TEST(FrameTest, OversizedLengthIsAnErrorWithoutAllocation) {
  FrameDecoder d(1024);
  Feed(d, std::string("\xff\xff\xff\xff", 4));  // a 4 GiB length prefix
  Status st = d.Drain([](Envelope&) { return true; });
  EXPECT_EQ(st.code(), StatusCode::kProtocolError);
  EXPECT_NE(st.message().find("exceeds"), std::string::npos);
}

TEST(FrameTest, GarbageBodyIsAnError) {
  FrameDecoder d(1024);
  std::string bad = std::string("\x05\x00\x00\x00", 4) + "\xff\xff\xff\xff\xff";
  Feed(d, bad);
  EXPECT_EQ(d.Drain([](Envelope&) { return true; }).code(), StatusCode::kProtocolError);
}

TEST(FrameTest, TruncatedFrameWaitsForMore) {
  std::string wire;
  AppendFrame(Sample(9), &wire);
  FrameDecoder d(1024);
  Feed(d, wire.substr(0, wire.size() - 1));
  int n = 0;
  EXPECT_TRUE(d.Drain([&](Envelope&) { return ++n > 0; }).ok());
  EXPECT_EQ(n, 0);
  Feed(d, wire.substr(wire.size() - 1));
  EXPECT_TRUE(d.Drain([&](Envelope&) { return ++n > 0; }).ok());
  EXPECT_EQ(n, 1);
}

TEST(FrameTest, StopsWhenHandlerSaysSo) {
  std::string wire;
  AppendFrame(Sample(1), &wire);
  AppendFrame(Sample(2), &wire);
  FrameDecoder d(1024);
  Feed(d, wire);
  int n = 0;
  EXPECT_TRUE(d.Drain([&](Envelope&) { return ++n < 1; }).ok());
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(d.Drain([&](Envelope&) { return ++n < 5; }).ok());
  EXPECT_EQ(n, 2);
}

TEST(FrameTest, OnArenasAFrameOutlivesItsHandlerWhenKept) {
  std::string wire;
  Envelope big;
  big.mutable_push_task()->mutable_spec()->set_name("f");
  big.mutable_push_task()->mutable_spec()->add_args()->set_value(
      std::string(10000, 'x'));  // past the first block
  AppendFrame(big, &wire);
  AppendFrame(Sample(7), &wire);
  FrameDecoder d(kDefaultMaxFrameBytes);
  d.ParseOnArenas();
  Feed(d, wire);
  std::vector<std::shared_ptr<Envelope>> kept;
  ASSERT_TRUE(d.Drain([&](Envelope& e) {
                 EXPECT_EQ(d.current().get(), &e);
                 EXPECT_NE(e.GetArena(), nullptr);
                 kept.push_back(d.current());
                 return true;
               }).ok());
  EXPECT_EQ(d.current(), nullptr);  // none outside a handler
  ASSERT_EQ(kept.size(), 2u);
  // Each is whole after the decoder moved on (and its buffer was reused).
  Feed(d, std::string(64, '\0'));
  EXPECT_EQ(kept[0]->push_task().spec().args(0).value(), std::string(10000, 'x'));
  EXPECT_EQ(kept[1]->status_request().request_id(), 7u);
  // A part kept alone keeps the whole frame.
  std::shared_ptr<const PushTask> push(kept[0], &kept[0]->push_task());
  kept.clear();
  EXPECT_EQ(push->spec().name(), "f");
}

TEST(FrameTest, OnArenasAGarbageFrameIsStillAnError) {
  FrameDecoder d(1024);
  d.ParseOnArenas();
  Feed(d, std::string("\x03\0\0\0\xff\xff\xff", 7));
  EXPECT_EQ(d.Drain([](Envelope&) { return true; }).code(), StatusCode::kProtocolError);
}

TEST(FrameTest, WithoutArenasNoFrameIsHeld) {
  std::string wire;
  AppendFrame(Sample(1), &wire);
  FrameDecoder d(1024);
  Feed(d, wire);
  ASSERT_TRUE(d.Drain([&](Envelope& e) {
                 EXPECT_EQ(d.current(), nullptr);
                 EXPECT_EQ(e.GetArena(), nullptr);
                 return true;
               }).ok());
}

}  // namespace
}  // namespace prism::rpc

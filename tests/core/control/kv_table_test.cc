// KvTable on its own: gets, puts that keep or overwrite, deletes, namespaces apart, and an
// unknown operation refused without a change.
#include "control/kv_table.h"

#include <gtest/gtest.h>

#include <string>

namespace prism {
namespace {

rpc::KvRequest Req(rpc::KvRequest::Op op, const std::string& ns, const std::string& key,
                   const std::string& value = "", bool overwrite = false) {
  rpc::KvRequest r;
  r.set_request_id(5);
  r.set_op(op);
  r.set_ns(ns);
  r.set_key(key);
  r.set_value(value);
  r.set_overwrite(overwrite);
  return r;
}

TEST(KvTableTest, PutsGetsAndDeletes) {
  KvTable t;
  auto got = t.Apply(Req(rpc::KvRequest::GET, "fn", "f"));
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->found());
  EXPECT_EQ(got->request_id(), 5u);
  auto put = t.Apply(Req(rpc::KvRequest::PUT, "fn", "f", "one"));
  ASSERT_TRUE(put.ok());
  EXPECT_FALSE(put->found()) << "not there before";
  // A put keeps what is there unless told to overwrite; found says it was there.
  put = t.Apply(Req(rpc::KvRequest::PUT, "fn", "f", "two"));
  EXPECT_TRUE(put->found());
  EXPECT_EQ(t.Apply(Req(rpc::KvRequest::GET, "fn", "f"))->value(), "one");
  ASSERT_TRUE(t.Apply(Req(rpc::KvRequest::PUT, "fn", "f", "three", /*overwrite=*/true)).ok());
  EXPECT_EQ(t.Apply(Req(rpc::KvRequest::GET, "fn", "f"))->value(), "three");
  // Namespaces are apart.
  EXPECT_FALSE(t.Apply(Req(rpc::KvRequest::GET, "other", "f"))->found());
  auto del = t.Apply(Req(rpc::KvRequest::DELETE, "fn", "f"));
  EXPECT_TRUE(del->found());
  EXPECT_FALSE(t.Apply(Req(rpc::KvRequest::DELETE, "fn", "f"))->found());
  EXPECT_EQ(t.size(), 0u);
}

TEST(KvTableTest, AnUnknownOperationIsRefusedAndChangesNothing) {
  KvTable t;
  ASSERT_TRUE(t.Apply(Req(rpc::KvRequest::PUT, "ns", "k", "v")).ok());
  auto bad = t.Apply(Req(static_cast<rpc::KvRequest::Op>(77), "ns", "k", "x", true));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Apply(Req(rpc::KvRequest::GET, "ns", "k"))->value(), "v");
  EXPECT_EQ(t.size(), 1u);
}

}  // namespace
}  // namespace prism

// StoreService: the store's requests as core workers send them, answered on their connection,
// against a real store; bad requests get clear errors and leave the store as it was.
#include "node/store_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "base/ids.h"
#include "rpc/frame.h"

namespace prism {
namespace {

ObjectId Id(uint32_t n) { return PutObjectId(DriverTaskId(JobIdFromInt(7)), n); }

class StoreServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("prism-store-service-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    ObjectStoreConfig c;
    c.capacity = 1 << 20;
    c.spill_dir = (dir_ / "spill").string();
    auto s = ObjectStore::Open(c);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    service_ = std::make_unique<StoreService>(
        *store_, [this](const WorkerId& w) { return alive_.count(w) > 0; });
    asio::local::stream_protocol::socket a(io_), b(io_);
    asio::local::connect_pair(a, b);
    peer_ = std::move(b);
    conn_ = rpc::Connection::Create(std::move(a));
    conn_->Start([](rpc::Connection&, rpc::Envelope&) {}, [](rpc::Connection&, const Status&) {});
    alive_.insert(owner_);
  }
  void TearDown() override {
    conn_->Close(Status::OK());
    io_.poll();
    service_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Handles `msg` and returns the frame the service answered with (none: nullopt).
  std::optional<rpc::Envelope> Ask(rpc::Envelope msg) {
    service_->Handle(*conn_, client_, msg);
    io_.poll();
    peer_.non_blocking(true);
    char buf[4096];
    asio::error_code ec;
    size_t n = peer_.read_some(asio::buffer(buf), ec);
    if (ec) return std::nullopt;
    size_t avail = 0;
    std::memcpy(decoder_.WritableSpace(n, &avail), buf, n);
    decoder_.Commit(n);
    std::optional<rpc::Envelope> got;
    EXPECT_TRUE(decoder_
                    .Drain([&](rpc::Envelope& m) {
                      got = std::move(m);
                      return false;
                    })
                    .ok());
    return got;
  }
  rpc::Envelope Create(const ObjectId& id, uint64_t size, const WorkerId& owner, uint64_t rid) {
    rpc::Envelope e;
    auto* c = e.mutable_store_create();
    c->set_request_id(rid);
    c->set_object_id(id.Binary());
    c->set_size(size);
    c->set_owner_worker_id(owner.Binary());
    return e;
  }

  std::filesystem::path dir_;
  asio::io_context io_;
  asio::local::stream_protocol::socket peer_{io_};
  std::shared_ptr<rpc::Connection> conn_;
  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<StoreService> service_;
  std::set<WorkerId> alive_;
  WorkerId owner_ = WorkerId::FromBinary(std::string(16, 'o'));
  ObjectStore::ClientId client_ = 1;
  rpc::FrameDecoder decoder_{rpc::kDefaultMaxFrameBytes};
};

TEST_F(StoreServiceTest, CreateSealGetReleaseAndDelete) {
  auto created = Ask(Create(Id(1), 1000, owner_, 11));
  ASSERT_TRUE(created && created->has_store_reply());
  EXPECT_EQ(created->store_reply().request_id(), 11u);
  ASSERT_EQ(created->store_reply().objects_size(), 1);
  EXPECT_EQ(created->store_reply().objects(0).size(), 1000u);
  rpc::Envelope seal;
  seal.mutable_store_seal()->set_request_id(12);
  seal.mutable_store_seal()->set_object_id(Id(1).Binary());
  auto sealed = Ask(seal);
  ASSERT_TRUE(sealed && sealed->has_store_reply());
  EXPECT_EQ(sealed->store_reply().request_id(), 12u);
  // One answer for every id asked for, in order; an unknown or malformed one carries its error.
  rpc::Envelope get;
  get.mutable_store_get()->set_request_id(13);
  get.mutable_store_get()->add_object_ids(Id(1).Binary());
  get.mutable_store_get()->add_object_ids("short");
  auto got = Ask(get);
  ASSERT_TRUE(got && got->has_store_reply());
  ASSERT_EQ(got->store_reply().objects_size(), 2);
  EXPECT_EQ(got->store_reply().objects(0).size(), 1000u);
  EXPECT_EQ(got->store_reply().objects(0).offset(), created->store_reply().objects(0).offset());
  EXPECT_EQ(got->store_reply().objects(1).code(),
            static_cast<uint32_t>(StatusCode::kInvalidArgument));
  EXPECT_NE(got->store_reply().objects(1).message().find("bytes"), std::string::npos);
  // Releases and deletes are answered only when they fail.
  rpc::Envelope release;
  release.mutable_store_release()->set_request_id(14);
  release.mutable_store_release()->add_object_ids(Id(1).Binary());
  release.mutable_store_release()->add_object_ids(
      Id(1).Binary());  // the get's pin, then the writer's
  EXPECT_FALSE(Ask(release).has_value());
  rpc::Envelope del;
  del.mutable_store_delete()->set_request_id(15);
  del.mutable_store_delete()->add_object_ids(Id(1).Binary());
  EXPECT_FALSE(Ask(del).has_value());
  EXPECT_FALSE(store_->Contains(Id(1)));
}

TEST_F(StoreServiceTest, BadRequestsAreRefusedWithTheirReasonAndChangeNothing) {
  // An owner that is not a live driver or worker here: nobody could ever free the object.
  auto refused = Ask(Create(Id(2), 100, WorkerId::FromBinary(std::string(16, 'x')), 21));
  ASSERT_TRUE(refused && refused->has_error());
  EXPECT_EQ(refused->error().request_id(), 21u);
  EXPECT_EQ(refused->error().code(), static_cast<uint32_t>(StatusCode::kNotFound));
  EXPECT_NE(refused->error().message().find("not a live driver or worker"), std::string::npos);
  EXPECT_FALSE(store_->Contains(Id(2)));
  // A malformed object id, and a create without an owner.
  rpc::Envelope bad = Create(Id(3), 100, owner_, 22);
  bad.mutable_store_create()->set_object_id("nope");
  auto r = Ask(bad);
  ASSERT_TRUE(r && r->has_error());
  EXPECT_EQ(r->error().code(), static_cast<uint32_t>(StatusCode::kInvalidArgument));
  rpc::Envelope ownerless = Create(Id(3), 100, owner_, 23);
  ownerless.mutable_store_create()->clear_owner_worker_id();
  r = Ask(ownerless);
  ASSERT_TRUE(r && r->has_error());
  EXPECT_NE(r->error().message().find("owner"), std::string::npos);
  // Sealing what was never created, and releasing it: errors with the request's id.
  rpc::Envelope seal;
  seal.mutable_store_seal()->set_request_id(24);
  seal.mutable_store_seal()->set_object_id(Id(4).Binary());
  r = Ask(seal);
  ASSERT_TRUE(r && r->has_error());
  EXPECT_EQ(r->error().request_id(), 24u);
  rpc::Envelope release;
  release.mutable_store_release()->set_request_id(25);
  release.mutable_store_release()->add_object_ids(Id(4).Binary());
  release.mutable_store_release()->add_object_ids("x");
  r = Ask(release);
  ASSERT_TRUE(r && r->has_error());
  EXPECT_EQ(r->error().request_id(), 25u);
  EXPECT_NE(r->error().message().find("; "), std::string::npos)
      << "both failures named: " << r->error().message();
  EXPECT_EQ(store_->stats().num_objects, 0u);
}

}  // namespace
}  // namespace prism

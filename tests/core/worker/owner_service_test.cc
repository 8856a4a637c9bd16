// OwnerService, the owner's side of the owner-to-owner protocol, with a real reference table and
// GPU side (no device: no device object is held), answering on one end of a socket pair: fetches
// of ready, pending, stored and unknown objects, borrow registrations and releases, dead
// borrowers and importers, malformed requests.
#include "worker/owner_service.h"

#include <gtest/gtest.h>

#include <asio.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "base/ids.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

ObjectId Oid(uint8_t n) {
  return ObjectId::FromBinary(std::string(ObjectId::kSize, static_cast<char>(n)));
}

class OwnerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    asio::local::stream_protocol::socket a(loop_.context()), b(loop_.context());
    asio::local::connect_pair(a, b);
    ours_ = rpc::Connection::Create(std::move(a));
    theirs_ = rpc::Connection::Create(std::move(b));
    ours_->Start([](rpc::Connection&, rpc::Envelope&) {}, [](rpc::Connection&, const Status&) {});
    theirs_->Start(
        [this](rpc::Connection&, rpc::Envelope& m) {
          std::lock_guard<std::mutex> lock(mu_);
          answers_.push_back(m);
        },
        [](rpc::Connection&, const Status&) {});
    loop_.Start("test-loop");
  }
  void TearDown() override {
    OnLoop([this] {
      ours_->Close(Status::OK());
      theirs_->Close(Status::OK());
    });
    loop_.Stop();
  }
  template <typename F>
  void OnLoop(F f) {
    std::promise<void> done;
    asio::post(loop_.context(), [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }
  // Hands `m` to the service on the loop, as the core worker does; returns what Handle said.
  bool Send(const rpc::Envelope& m) {
    bool handled = false;
    OnLoop([&] { handled = service_.Handle(*ours_, m); });
    return handled;
  }
  // Waits (up to 5 s) for the `n`th answer.
  rpc::Envelope Answer(size_t n) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (answers_.size() > n) return answers_[n];
      }
      std::this_thread::sleep_for(1ms);
    }
    ADD_FAILURE() << "no answer " << n;
    return {};
  }
  size_t answers() {
    std::lock_guard<std::mutex> lock(mu_);
    return answers_.size();
  }
  static rpc::Envelope GetObject(uint64_t rid, const std::string& id) {
    rpc::Envelope m;
    m.mutable_get_object()->set_request_id(rid);
    m.mutable_get_object()->set_object_id(id);
    return m;
  }
  static rpc::Envelope AddBorrowers(uint64_t rid, const WorkerId& borrower,
                                    const std::vector<std::string>& ids) {
    rpc::Envelope m;
    m.mutable_add_borrowers()->set_request_id(rid);
    m.mutable_add_borrowers()->set_borrower(borrower.Binary());
    for (const auto& id : ids) m.mutable_add_borrowers()->add_object_ids(id);
    return m;
  }

  rpc::EventLoop loop_;
  MemoryStore store_;
  GpuTasks gpu_;
  OwnerService service_{store_, gpu_};
  std::shared_ptr<rpc::Connection> ours_, theirs_;
  std::mutex mu_;
  std::vector<rpc::Envelope> answers_;
};

TEST_F(OwnerServiceTest, AFetchIsAnsweredWithTheValueWhereItLiesOnceReady) {
  store_.AddRef(Oid(1));
  store_.Put(Oid(1), StoredObject::Value("abc"));
  store_.AddRef(Oid(2));
  store_.Put(Oid(2), StoredObject::InStore(4096));
  store_.AddRef(Oid(3));  // pending

  ASSERT_TRUE(Send(GetObject(11, Oid(1).Binary())));
  rpc::Envelope a = Answer(0);
  EXPECT_EQ(a.get_object_reply().request_id(), 11u);
  EXPECT_EQ(a.get_object_reply().object_id(), Oid(1).Binary());
  EXPECT_EQ(a.get_object_reply().data(), "abc");
  EXPECT_EQ(a.get_object_reply().error().kind(), rpc::ERROR_NONE);

  ASSERT_TRUE(Send(GetObject(12, Oid(2).Binary())));
  EXPECT_TRUE(Answer(1).get_object_reply().in_store());
  EXPECT_EQ(Answer(1).get_object_reply().size(), 4096u);

  ASSERT_TRUE(Send(GetObject(13, Oid(3).Binary())));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(answers(), 2u);  // the pending one waits for its value
  store_.Put(Oid(3), StoredObject::Value("late"));
  EXPECT_EQ(Answer(2).get_object_reply().request_id(), 13u);
  EXPECT_EQ(Answer(2).get_object_reply().data(), "late");
}

TEST_F(OwnerServiceTest, AFetchOfAnObjectNotHeldOrAMalformedIdIsObjectLost) {
  ASSERT_TRUE(Send(GetObject(1, Oid(9).Binary())));
  rpc::Envelope a = Answer(0);
  EXPECT_EQ(a.get_object_reply().error().kind(), rpc::ERROR_OBJECT_LOST);
  EXPECT_NE(a.get_object_reply().error().message().find(Oid(9).Hex()), std::string::npos);

  ASSERT_TRUE(Send(GetObject(2, "short")));
  rpc::Envelope b = Answer(1);
  EXPECT_EQ(b.get_object_reply().request_id(), 2u);
  EXPECT_EQ(b.get_object_reply().error().kind(), rpc::ERROR_OBJECT_LOST);
  EXPECT_NE(b.get_object_reply().error().message().find("malformed"), std::string::npos);
}

TEST_F(OwnerServiceTest, RegistrationsCountWhatIsHeldAndReportTheRestLost) {
  store_.AddRef(Oid(1));
  store_.Put(Oid(1), StoredObject::Value("v"));
  WorkerId borrower = RandomUniqueId();
  ASSERT_TRUE(Send(AddBorrowers(5, borrower, {Oid(1).Binary(), Oid(2).Binary(), "bad"})));
  rpc::Envelope a = Answer(0);
  EXPECT_EQ(a.borrowers_added().request_id(), 5u);
  ASSERT_EQ(a.borrowers_added().lost_size(), 2);
  EXPECT_EQ(a.borrowers_added().lost(0), Oid(2).Binary());
  EXPECT_EQ(a.borrowers_added().lost(1), "bad");
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 1u);

  // Borrowed twice, released with a count of two: the object has no borrower left, and goes
  // with its last local reference.
  ASSERT_TRUE(Send(AddBorrowers(6, borrower, {Oid(1).Binary()})));
  Answer(1);
  rpc::Envelope release;
  release.mutable_remove_borrowers()->set_borrower(borrower.Binary());
  release.mutable_remove_borrowers()->add_object_ids(Oid(1).Binary());
  release.mutable_remove_borrowers()->add_counts(2);
  ASSERT_TRUE(Send(release));
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 0u);
  store_.RemoveRef(Oid(1));
  EXPECT_FALSE(store_.Contains(Oid(1)));
}

TEST_F(OwnerServiceTest, ADeadBorrowerLosesItsBorrowsAndItsLateRegistrationsAreRefused) {
  store_.AddRef(Oid(1));
  store_.Put(Oid(1), StoredObject::Value("v"));
  WorkerId borrower = RandomUniqueId();
  ASSERT_TRUE(Send(AddBorrowers(1, borrower, {Oid(1).Binary()})));
  Answer(0);
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 1u);
  OnLoop([&] { service_.WorkerDied(borrower); });
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 0u);
  // A registration it sent before it died, arriving now, is answered but not counted.
  ASSERT_TRUE(Send(AddBorrowers(2, borrower, {Oid(1).Binary()})));
  rpc::Envelope a = Answer(1);
  ASSERT_EQ(a.borrowers_added().lost_size(), 1);
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 0u);
  // So is one that names no valid borrower.
  rpc::Envelope bad = AddBorrowers(3, borrower, {Oid(1).Binary()});
  bad.mutable_add_borrowers()->set_borrower("x");
  ASSERT_TRUE(Send(bad));
  EXPECT_EQ(Answer(2).borrowers_added().lost_size(), 1);
  EXPECT_EQ(store_.NumBorrowers(Oid(1)), 0u);
}

TEST_F(OwnerServiceTest, AnImportOfADeviceObjectNotHeldHereIsLost) {
  rpc::Envelope m;
  m.mutable_import_device_object()->set_request_id(8);
  m.mutable_import_device_object()->set_id("no-such-tensor");
  m.mutable_import_device_object()->set_importer(RandomUniqueId().Binary());
  ASSERT_TRUE(Send(m));
  rpc::Envelope a = Answer(0);
  EXPECT_EQ(a.device_object_imported().request_id(), 8u);
  EXPECT_TRUE(a.device_object_imported().lost());
  // Releases of what is not held change nothing and need no answer.
  rpc::Envelope r;
  r.mutable_release_device_objects()->add_ids("no-such-tensor");
  r.mutable_release_device_objects()->set_importer("malformed");
  r.mutable_release_device_objects()->add_object_ids(Oid(4).Binary());
  ASSERT_TRUE(Send(r));
  EXPECT_EQ(gpu_.exported_count(), 0u);
}

TEST_F(OwnerServiceTest, OtherMessagesAreNotItsOwn) {
  rpc::Envelope m;
  m.mutable_push_task()->set_lease_id(1);
  EXPECT_FALSE(Send(m));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(answers(), 0u);
}

}  // namespace
}  // namespace prism

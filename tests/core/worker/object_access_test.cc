// ObjectAccess with a real reference table, owner client and task context, and no node store
// (small values only): puts and their ids, gets of values and of stored errors, timeouts, waits,
// waits that lend a worker task's CPU, handles of an earlier runtime, refs to freed objects, and a
// borrowed ref whose owner is gone.
#include "worker/object_access.h"

#include <gtest/gtest.h>
#include <prism/errors.h>
#include <prism/serialization.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "base/ids.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kGeneration = 424242;  // no runtime of this test process has it

TaskId Root() { return TaskId::FromBinary(std::string(TaskId::kSize, '\x01')); }

internal::EncodedValue Bytes(const std::string& s) {
  auto owned = std::make_shared<std::string>(s);
  internal::EncodedValue v;
  v.size = owned->size();
  v.write = [owned](char* dst) { std::copy(owned->begin(), owned->end(), dst); };
  v.keep = owned;
  return v;
}

class ObjectAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.Start("test-loop");
    OwnerClients::Config config;
    config.self = self_id_;
    owners_ = std::make_unique<OwnerClients>(loop_.context(), config, [](const ObjectId&) {});
    ObjectAccess::Self self{
        {"/tmp/prism-oa-test-self.sock", self_id_.Binary(), std::string(16, 'n')}, kGeneration};
    objects_ = std::make_unique<ObjectAccess>(
        self, store_, nullptr, *owners_, context_, loop_.context(),
        [this] { return in_task_.load(); },
        [this](bool b) {
          std::lock_guard<std::mutex> lock(mu_);
          blocked_.push_back(b);
        });
  }
  void TearDown() override {
    std::promise<void> closed;
    asio::post(loop_.context(), [&] {
      owners_->CloseAll();
      closed.set_value();
    });
    closed.get_future().wait();
    loop_.Stop();
  }
  std::string Read(const internal::RefPtr& ref, int64_t timeout_ms = -1) {
    auto views = objects_->Get({ref.get()}, timeout_ms);
    return std::string(views[0].bytes);
  }

  rpc::EventLoop loop_;
  WorkerId self_id_ = RandomUniqueId();
  MemoryStore store_;
  TaskContext context_{Root()};
  std::unique_ptr<OwnerClients> owners_;
  std::unique_ptr<ObjectAccess> objects_;
  std::atomic<bool> in_task_{false};
  std::mutex mu_;
  std::vector<bool> blocked_;
};

TEST_F(ObjectAccessTest, APutIsReadBackUnderTheNextPutIdAndOwnedHere) {
  internal::RefPtr a = objects_->Put(Bytes("hello"));
  internal::RefPtr b = objects_->Put(Bytes(""));
  EXPECT_EQ(a->id(), PutObjectId(Root(), 1));
  EXPECT_EQ(b->id(), PutObjectId(Root(), 2));
  EXPECT_TRUE(objects_->IsSelf(a->owner()));
  EXPECT_EQ(a->generation(), kGeneration);
  EXPECT_EQ(Read(a), "hello");
  EXPECT_EQ(Read(b), "");
  EXPECT_TRUE(store_.Contains(a->id()));
}

TEST_F(ObjectAccessTest, AStoredErrorIsThrownAsItsTypedError) {
  ObjectId id = ReturnObjectId(ChildTaskId(Root(), 1), 1);
  internal::RefPtr ref = objects_->NewHandle(id);
  rpc::TaskError e;
  e.set_kind(rpc::ERROR_ACTOR_DIED);
  e.set_message("the actor died");
  StoredObject err;
  err.error = e;
  store_.Put(id, err);
  EXPECT_THROW(Read(ref), ActorDiedError);

  ObjectId id2 = ReturnObjectId(ChildTaskId(Root(), 2), 1);
  internal::RefPtr ref2 = objects_->NewHandle(id2);
  store_.Put(id2, StoredObject::Error(rpc::ERROR_OBJECT_STORE_FULL, "full"));
  EXPECT_THROW(Read(ref2), ObjectStoreFullError);
}

TEST_F(ObjectAccessTest, GetTimesOutAndWaitSaysWhichAreReady) {
  ObjectId pending = ReturnObjectId(ChildTaskId(Root(), 1), 1);
  internal::RefPtr p = objects_->NewHandle(pending);
  internal::RefPtr r = objects_->Put(Bytes("x"));
  try {
    objects_->Get({r.get(), p.get()}, 20);
    FAIL() << "no timeout";
  } catch (const GetTimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("1 of 2 objects not ready"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(objects_->Wait({p.get(), r.get()}, 1, 0), (std::vector<bool>{false, true}));
  std::thread later([&] {
    std::this_thread::sleep_for(30ms);
    store_.Put(pending, StoredObject::Value("late"));
  });
  EXPECT_EQ(objects_->Wait({p.get(), r.get()}, 2, 5000), (std::vector<bool>{true, true}));
  later.join();
  EXPECT_EQ(Read(p), "late");
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(blocked_.empty());  // not a worker's task: nothing to lend
}

TEST_F(ObjectAccessTest, AWorkersTaskLendsItsCpuOnlyWhileItReallyWaits) {
  in_task_ = true;
  internal::RefPtr r = objects_->Put(Bytes("ready"));
  EXPECT_EQ(Read(r), "ready");
  EXPECT_EQ(objects_->Wait({r.get()}, 1, -1), std::vector<bool>{true});
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_TRUE(blocked_.empty());  // ready at once: no wait
  }
  ObjectId pending = ReturnObjectId(ChildTaskId(Root(), 1), 1);
  internal::RefPtr p = objects_->NewHandle(pending);
  std::thread later([&] {
    std::this_thread::sleep_for(30ms);
    store_.Put(pending, StoredObject::Value("v"));
  });
  EXPECT_EQ(Read(p), "v");
  later.join();
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(blocked_, (std::vector<bool>{true, false}));
}

TEST_F(ObjectAccessTest, HandlesOfAnEarlierRuntimeAndRefsToFreedObjectsAreRefused) {
  internal::RefHandle old(PutObjectId(Root(), 1), internal::OwnerAddress{}, kGeneration - 1);
  EXPECT_THROW(objects_->CheckCurrent(old), InvalidArgumentError);
  EXPECT_THROW(objects_->Get({&old}, 0), InvalidArgumentError);

  // A ref to one of this process's objects that went already reads as lost.
  ObjectId gone = PutObjectId(Root(), 99);
  internal::RefPtr ref = objects_->MakeRef(gone, objects_->SelfHandle(gone)->owner());
  EXPECT_THROW(Read(ref), ObjectLostError);
}

TEST_F(ObjectAccessTest, ABorrowedRefWhoseOwnerIsGoneReadsAsOwnerDied) {
  internal::OwnerAddress owner{"/tmp/prism-oa-test-nobody.sock", RandomUniqueId().Binary(),
                               std::string(16, 'm')};
  ObjectId id = PutObjectId(ChildTaskId(Root(), 5), 1);
  internal::RefPtr ref = objects_->MakeRef(id, owner);
  EXPECT_FALSE(objects_->IsSelf(ref->owner()));
  EXPECT_THROW(Read(ref, 5000), OwnerDiedError);
  // The registration the ref made at its owner is answered (as lost) too.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (owners_->pending_registrations() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(owners_->pending_registrations(), 0);
}

}  // namespace
}  // namespace prism

#include "object_store/object_store.h"

#include "base/ids.h"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace prism {
namespace {

ObjectId Id(uint32_t n) { return PutObjectId(DriverTaskId(JobId::FromBinary(std::string("\1\0\0\0", 4))), n); }

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("prism-store-test-" + std::to_string(getpid()));
    ObjectStoreConfig c;
    c.capacity = 1 << 20;
    c.spill_dir = (dir_ / "spill").string();
    std::filesystem::create_directories(dir_);
    auto s = ObjectStore::Open(c);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    base_ = static_cast<uint8_t*>(
        ::mmap(nullptr, store_->capacity(), PROT_READ | PROT_WRITE, MAP_SHARED, store_->fd(), 0));
    ASSERT_NE(base_, MAP_FAILED);
    owner_ = WorkerId::FromBinary(std::string(16, 'w'));
  }
  void TearDown() override {
    ::munmap(base_, store_->capacity());
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Creates, fills with `fill` and seals an object; the writer's pin is released.
  void PutObject(ObjectStore::ClientId c, const ObjectId& id, uint64_t size, char fill) {
    auto loc = store_->Create(c, id, size, owner_);
    ASSERT_TRUE(loc.ok()) << loc.status().ToString();
    std::memset(base_ + loc->offset, fill, size);
    ASSERT_TRUE(store_->Seal(c, id).ok());
    ASSERT_TRUE(store_->Release(c, id).ok());
  }
  size_t SpillFiles() {
    size_t n = 0;
    if (!std::filesystem::exists(dir_ / "spill")) return 0;
    for (auto& e : std::filesystem::directory_iterator(dir_ / "spill")) n += e.is_regular_file();
    return n;
  }

  std::filesystem::path dir_;
  std::unique_ptr<ObjectStore> store_;
  uint8_t* base_ = nullptr;
  WorkerId owner_;
};

TEST_F(ObjectStoreTest, CreateSealGetReleaseDelete) {
  PutObject(1, Id(1), 1000, 'a');
  auto got = store_->Get(2, Id(1));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size, 1000u);
  EXPECT_EQ(base_[got->offset + 999], 'a');
  EXPECT_EQ(store_->stats().pinned, 1000u);
  store_->Delete(Id(1));
  EXPECT_TRUE(store_->Contains(Id(1))) << "a pinned object outlives its Delete";
  EXPECT_FALSE(store_->Get(3, Id(1)).ok()) << "but nobody new can get it";
  ASSERT_TRUE(store_->Release(2, Id(1)).ok());
  EXPECT_FALSE(store_->Contains(Id(1)));
  EXPECT_EQ(store_->stats().used, 0u);
}

TEST_F(ObjectStoreTest, BadRequestsGetErrors) {
  EXPECT_EQ(store_->Create(1, ObjectId(), 10, owner_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Create(1, Id(1), 0, owner_).status().code(), StatusCode::kInvalidArgument);
  PutObject(1, Id(1), 10, 'x');
  EXPECT_EQ(store_->Create(1, Id(1), 10, owner_).status().code(), StatusCode::kAlreadyExists)
      << "a sealed object cannot be written again";
  EXPECT_EQ(store_->Seal(1, Id(1)).code(), StatusCode::kInvalidArgument) << "sealed twice";
  EXPECT_EQ(store_->Release(1, Id(1)).code(), StatusCode::kNotFound) << "released twice";
  EXPECT_EQ(store_->Abort(1, Id(1)).code(), StatusCode::kInvalidArgument) << "aborting a sealed object";
  EXPECT_EQ(store_->Get(1, Id(2)).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->Create(1, Id(3), 10, owner_).ok());
  EXPECT_EQ(store_->Seal(2, Id(3)).code(), StatusCode::kPermissionDenied) << "another client's object";
  EXPECT_EQ(store_->Get(2, Id(3)).status().code(), StatusCode::kNotFound) << "not sealed yet";
  auto big = store_->Create(1, Id(4), store_->capacity() + 1, owner_);
  EXPECT_EQ(big.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(big.status().message().find("larger than the whole object store"), std::string::npos);
  store_->Delete(Id(99));  // unknown: ignored
  EXPECT_TRUE(store_->Get(1, Id(1)).ok()) << "the store keeps working";
}

TEST_F(ObjectStoreTest, ClientGoneReleasesPinsAndDropsHalfWrittenObjects) {
  PutObject(1, Id(1), 100, 'a');
  ASSERT_TRUE(store_->Get(2, Id(1)).ok());
  ASSERT_TRUE(store_->Get(2, Id(1)).ok());
  ASSERT_TRUE(store_->Create(2, Id(2), 100, owner_).ok());
  store_->ClientGone(2);
  EXPECT_FALSE(store_->Contains(Id(2)));
  EXPECT_EQ(store_->stats().pinned, 0u);
  store_->Delete(Id(1));
  EXPECT_FALSE(store_->Contains(Id(1)));
}

TEST_F(ObjectStoreTest, OwnerGoneFreesItsObjects) {
  PutObject(1, Id(1), 100, 'a');
  store_->OwnerGone(owner_);
  EXPECT_FALSE(store_->Contains(Id(1)));
}

TEST_F(ObjectStoreTest, SpillsUnpinnedObjectsAndRestoresThem) {
  const uint64_t size = 200 << 10;  // five of them overfill the 1 MiB arena
  for (uint32_t i = 1; i <= 15; ++i) PutObject(1, Id(i), size, static_cast<char>('a' + i));
  auto s = store_->stats();
  EXPECT_GT(s.num_spilled, 0u);
  EXPECT_LE(s.used, s.capacity);
  for (uint32_t i = 1; i <= 15; ++i) {
    auto got = store_->Get(2, Id(i));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(base_[got->offset], 'a' + i);
    EXPECT_EQ(base_[got->offset + size - 1], 'a' + i);
    ASSERT_TRUE(store_->Release(2, Id(i)).ok());
  }
  EXPECT_GT(store_->stats().restores_total, 0u);
  EXPECT_GT(SpillFiles(), 0u);
  for (uint32_t i = 1; i <= 15; ++i) store_->Delete(Id(i));
  EXPECT_EQ(SpillFiles(), 0u) << "spill files go with their objects";
  EXPECT_EQ(store_->stats().used, 0u);
  EXPECT_EQ(store_->stats().spilled, 0u);
}

TEST_F(ObjectStoreTest, FullOfPinnedObjectsIsAnErrorNotACrash) {
  const uint64_t size = 300 << 10;
  for (uint32_t i = 1; i <= 3; ++i) ASSERT_TRUE(store_->Create(1, Id(i), size, owner_).ok());
  auto st = store_->Create(1, Id(4), size, owner_).status();
  EXPECT_EQ(st.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(st.message().find("pinned"), std::string::npos) << st.message();
  ASSERT_TRUE(store_->Abort(1, Id(1)).ok());
  EXPECT_TRUE(store_->Create(1, Id(4), size, owner_).ok()) << "room again once a pin goes";
}

TEST(ObjectStorePrefault, AllocatesTheArenaAtStartOrRefusesClearly) {
  ObjectStoreConfig c;
  c.capacity = 8 << 20;
  c.prefault = true;
  auto s = ObjectStore::Open(c);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  struct stat st {};
  ASSERT_EQ(::fstat((*s)->fd(), &st), 0);
  EXPECT_GE(uint64_t(st.st_blocks) * 512, c.capacity) << "every page is allocated";

  ObjectStoreConfig lazy;
  lazy.capacity = 8 << 20;
  auto l = ObjectStore::Open(lazy);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(::fstat((*l)->fd(), &st), 0);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, lazy.capacity) << "without it, pages come as objects touch them";

  ObjectStoreConfig huge;
  huge.capacity = uint64_t{1} << 50;
  huge.prefault = true;
  auto h = ObjectStore::Open(huge);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(h.status().message().find("available"), std::string::npos) << h.status().message();
}

}  // namespace
}  // namespace prism

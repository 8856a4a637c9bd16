#include "object_store/object_store.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "base/ids.h"

namespace prism {
namespace {

ObjectId Id(uint32_t n) {
  return PutObjectId(DriverTaskId(JobId::FromBinary(std::string("\1\0\0\0", 4))), n);
}

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("prism-store-test-" + std::to_string(getpid()));
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
  EXPECT_EQ(store_->Create(1, ObjectId(), 10, owner_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Create(1, Id(1), 0, owner_).status().code(), StatusCode::kInvalidArgument);
  PutObject(1, Id(1), 10, 'x');
  EXPECT_EQ(store_->Create(1, Id(1), 10, owner_).status().code(), StatusCode::kAlreadyExists)
      << "a sealed object cannot be written again";
  EXPECT_EQ(store_->Seal(1, Id(1)).code(), StatusCode::kInvalidArgument) << "sealed twice";
  EXPECT_EQ(store_->Release(1, Id(1)).code(), StatusCode::kNotFound) << "released twice";
  EXPECT_EQ(store_->Abort(1, Id(1)).code(), StatusCode::kInvalidArgument)
      << "aborting a sealed object";
  EXPECT_EQ(store_->Get(1, Id(2)).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->Create(1, Id(3), 10, owner_).ok());
  EXPECT_EQ(store_->Seal(2, Id(3)).code(), StatusCode::kPermissionDenied)
      << "another client's object";
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

// Spills and restores run through run_io: here a queue the test drains by hand, standing for the
// daemon's disk thread. While they wait, every other request is answered.
TEST(ObjectStoreAsync, RequestsAreAnsweredWhileASpillOrRestoreRuns) {
  auto dir =
      std::filesystem::temp_directory_path() / ("prism-store-async-" + std::to_string(getpid()));
  struct RemoveAtEnd {  // (also when an assertion ends the test early)
    std::filesystem::path dir;
    ~RemoveAtEnd() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } remove_at_end{dir};
  std::vector<std::pair<std::function<void()>, std::function<void()>>> jobs;
  ObjectStoreConfig c;
  c.capacity = 1 << 20;
  c.spill_dir = (dir / "spill").string();
  c.run_io = [&](std::function<void()> io, std::function<void()> then) {
    jobs.emplace_back(io, then);
  };
  auto opened = ObjectStore::Open(c);
  ASSERT_TRUE(opened.ok());
  auto& store = *opened;
  auto* base = static_cast<uint8_t*>(
      ::mmap(nullptr, store->capacity(), PROT_READ | PROT_WRITE, MAP_SHARED, store->fd(), 0));
  ASSERT_NE(base, MAP_FAILED);
  const WorkerId owner = WorkerId::FromBinary(std::string(16, 'w'));
  const uint64_t size = 300 << 10;
  for (uint32_t i = 1; i <= 3; ++i) {
    std::optional<Result<ObjectStore::Located>> got;
    store->CreateAsync(1, Id(i), size, owner, [&](Result<ObjectStore::Located> r) { got = r; });
    ASSERT_TRUE(got && got->ok()) << "fits at once";
    std::memset(base + (*got)->offset, 'a' + i, size);
    ASSERT_TRUE(store->Seal(1, Id(i)).ok());
    ASSERT_TRUE(store->Release(1, Id(i)).ok());
  }
  std::optional<Result<ObjectStore::Located>> fourth;
  store->CreateAsync(1, Id(4), size, owner, [&](Result<ObjectStore::Located> r) { fourth = r; });
  EXPECT_FALSE(fourth) << "waits for a spill: " << (fourth ? fourth->status().ToString() : "");
  ASSERT_EQ(jobs.size(), 1u) << "one object is written out";
  // Meanwhile: reads of objects in memory (the one being spilled too), seal of another.
  std::optional<Result<ObjectStore::Located>> read;
  store->GetAsync(2, Id(1), [&](Result<ObjectStore::Located> r) { read = r; });
  ASSERT_TRUE(read && read->ok()) << "answered while the spill runs";
  EXPECT_EQ(base[(*read)->offset], 'b');
  ASSERT_TRUE(store->Release(2, Id(1)).ok());
  auto job = jobs[0];
  jobs.clear();
  job.first();
  job.second();
  ASSERT_TRUE(fourth && fourth->ok()) << (fourth ? fourth->status().ToString() : "no answer");
  EXPECT_EQ(store->stats().num_spilled, 1u);
  ASSERT_TRUE(store->Abort(1, Id(4)).ok());
  // The spilled one (the least recently used when the spill began: the first) is read back
  // through run_io.
  std::optional<Result<ObjectStore::Located>> restored, again;
  store->GetAsync(3, Id(1), [&](Result<ObjectStore::Located> r) { restored = r; });
  store->GetAsync(4, Id(1), [&](Result<ObjectStore::Located> r) { again = r; });
  EXPECT_FALSE(restored);
  ASSERT_EQ(jobs.size(), 1u) << "two readers, one restore";
  job = jobs[0];
  jobs.clear();
  job.first();
  job.second();
  ASSERT_TRUE(restored && restored->ok() && again && again->ok());
  EXPECT_EQ(base[(*restored)->offset], 'b');
  EXPECT_EQ(base[(*restored)->offset + size - 1], 'b');
  EXPECT_EQ((*again)->offset, (*restored)->offset);
  ::munmap(base, store->capacity());
  store.reset();
}

// A spill that fails (the disk is full: here a file size limit) loses nothing: the object stays
// in memory and readable, the create that needed room fails with why, and no partial spill file
// is left behind.
TEST_F(ObjectStoreTest, AFailedSpillKeepsTheObjectAndFailsTheCreate) {
  const uint64_t size = 600 << 10;
  PutObject(1, Id(1), size, 'x');
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 64 << 10;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto st = store_->Create(1, Id(2), size, owner_).status();
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(st.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(st.message().find("spilling failed"), std::string::npos) << st.message();
  EXPECT_EQ(SpillFiles(), 0u) << "no partial copy";
  auto got = store_->Get(2, Id(1));
  ASSERT_TRUE(got.ok()) << "the object stayed: " << got.status().ToString();
  EXPECT_EQ(base_[got->offset], 'x');
  EXPECT_EQ(base_[got->offset + size - 1], 'x');
  ASSERT_TRUE(store_->Release(2, Id(1)).ok());
  EXPECT_EQ(store_->stats().num_spilled, 0u);
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
  EXPECT_LT(uint64_t(st.st_blocks) * 512, lazy.capacity)
      << "without it, pages come as objects touch them";

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

#include "base/ids.h"

#include <sys/random.h>

#include <cstring>
#include <random>

namespace prism {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser: a stable, well-spread 64-bit mix
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// 12 bytes of hash over `data` and `counter`, stable across processes and runs.
void Hash12(const uint8_t* data, size_t n, uint64_t counter, uint8_t* out) {
  uint64_t a = Mix(counter ^ 0x7072697300000000ull), b = Mix(counter + n);
  for (size_t i = 0; i < n; ++i) {
    a = Mix(a ^ data[i]);
    b = Mix(b + data[i] + (a >> 7));
  }
  std::memcpy(out, &a, 8);
  uint32_t b4 = static_cast<uint32_t>(b);
  std::memcpy(out + 8, &b4, 4);
}

}  // namespace

JobId JobIdFromInt(uint32_t value) {
  JobId job;
  std::memcpy(job.mutable_data(), &value, 4);
  return job;
}

uint32_t JobIdToInt(const JobId& job) {
  uint32_t v;
  std::memcpy(&v, job.data(), 4);
  return v;
}

TaskId DriverTaskId(const JobId& job) {
  TaskId id;
  static const uint8_t kDriver[] = {'d', 'r', 'i', 'v', 'e', 'r'};
  Hash12(kDriver, sizeof(kDriver), JobIdToInt(job), id.mutable_data());
  std::memcpy(id.mutable_data() + 12, job.data(), 4);
  return id;
}

TaskId ChildTaskId(const TaskId& parent, uint64_t counter) {
  TaskId id;
  Hash12(parent.data(), TaskId::kSize, counter, id.mutable_data());
  std::memcpy(id.mutable_data() + 12, parent.data() + 12, 4);
  return id;
}

JobId JobIdOf(const TaskId& task) {
  JobId job;
  std::memcpy(job.mutable_data(), task.data() + 12, 4);
  return job;
}

static ObjectId MakeObjectId(const TaskId& task, uint32_t index) {
  ObjectId id;
  std::memcpy(id.mutable_data(), task.data(), TaskId::kSize);
  std::memcpy(id.mutable_data() + TaskId::kSize, &index, 4);
  return id;
}

ObjectId ReturnObjectId(const TaskId& task, uint32_t index) { return MakeObjectId(task, index); }
ObjectId PutObjectId(const TaskId& task, uint32_t counter) {
  return MakeObjectId(task, kPutBit | counter);
}

TaskId TaskIdOf(const ObjectId& object) {
  TaskId id;
  std::memcpy(id.mutable_data(), object.data(), TaskId::kSize);
  return id;
}

uint32_t ObjectIndex(const ObjectId& object) {
  uint32_t v;
  std::memcpy(&v, object.data() + TaskId::kSize, 4);
  return v & ~kPutBit;
}

bool IsPutObject(const ObjectId& object) {
  uint32_t v;
  std::memcpy(&v, object.data() + TaskId::kSize, 4);
  return (v & kPutBit) != 0;
}

UniqueId UniqueIdFromHex(const std::string& hex) {
  UniqueId id;
  if (hex.size() != 2 * UniqueId::kSize) return id;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < UniqueId::kSize; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return UniqueId();
    id.mutable_data()[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return id;
}

UniqueId RandomUniqueId() {
  UniqueId id;
  if (getrandom(id.mutable_data(), UniqueId::kSize, 0) != static_cast<ssize_t>(UniqueId::kSize)) {
    std::random_device rd;
    for (size_t i = 0; i < UniqueId::kSize; ++i) id.mutable_data()[i] = static_cast<uint8_t>(rd());
  }
  return id;
}

}  // namespace prism

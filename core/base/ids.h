// How ids are made. The layout is in <prism/ids.h> and docs/protocol.md.
#pragma once

#include <prism/ids.h>

#include <cstdint>
#include <string>

namespace prism {

/// The root task of a job: its driver's task, hash("driver", job) + job id.
TaskId DriverTaskId(const JobId& job);
/// The id of the `counter`-th task submitted by `parent` (counter starts at 1).
TaskId ChildTaskId(const TaskId& parent, uint64_t counter);
JobId JobIdOf(const TaskId& task);
JobId JobIdFromInt(uint32_t value);
uint32_t JobIdToInt(const JobId& job);

inline constexpr uint32_t kPutBit = 0x80000000u;
/// The most return objects one task may have (num_returns); their indexes stay far below kPutBit.
inline constexpr uint32_t kMaxReturns = 1u << 16;
/// The `index`-th return object of a task (index starts at 1).
ObjectId ReturnObjectId(const TaskId& task, uint32_t index);
/// The `counter`-th object put by `task` (counter starts at 1).
ObjectId PutObjectId(const TaskId& task, uint32_t counter);
TaskId TaskIdOf(const ObjectId& object);
uint32_t ObjectIndex(const ObjectId& object);
bool IsPutObject(const ObjectId& object);

/// Parses 32 hex digits; nil on malformed input.
UniqueId UniqueIdFromHex(const std::string& hex);

/// 16 bytes from the OS's random source.
UniqueId RandomUniqueId();

}  // namespace prism

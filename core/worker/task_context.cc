#include "worker/task_context.h"

#include <prism/errors.h>

#include "base/resources.h"

namespace prism {
namespace {

// The task running on this thread, with its counters.
thread_local bool tl_in_task = false;
thread_local TaskId tl_task;
thread_local uint64_t tl_submitted = 0;
thread_local uint32_t tl_puts = 0;
thread_local uint32_t tl_attempt = 0;
thread_local std::vector<int> tl_gpu_ids;
thread_local const rpc::TaskSpec* tl_spec = nullptr;

}  // namespace

TaskContext::Running::Running(const rpc::PushTask& push) {
  const rpc::TaskSpec& spec = push.spec();
  tl_in_task = true;
  tl_task = TaskId::FromBinary(spec.task_id());
  tl_attempt = spec.attempt();
  tl_submitted = 0;
  tl_puts = 0;
  tl_gpu_ids.clear();
  for (const auto& d : push.devices()) {
    if (d.resource() == kGpu) tl_gpu_ids.push_back(d.index());
  }
  tl_spec = &spec;
}

TaskContext::Running::~Running() { tl_spec = nullptr; }

bool TaskContext::InTask() { return tl_in_task; }

const rpc::TaskSpec* TaskContext::Spec() { return tl_spec; }

const std::vector<int>& TaskContext::GpuIds() { return tl_gpu_ids; }

TaskId TaskContext::Current() const { return tl_in_task ? tl_task : root_; }

TaskId TaskContext::NextChild() {
  return tl_in_task ? ChildTaskId(tl_task, ++tl_submitted) : ChildTaskId(root_, ++root_submitted_);
}

ObjectId TaskContext::NextPut() {
  uint32_t n;
  if (tl_in_task) {
    // Each attempt of a task puts under its own ids, so a retry never meets what an earlier
    // attempt left in the store.
    if (tl_puts >= (1u << 24) - 1) throw RuntimeError("a task may put at most 16,777,215 objects");
    n = ++tl_puts | ((tl_attempt & 0x7f) << 24);
  } else {
    n = ++root_puts_;
  }
  return PutObjectId(Current(), n);
}

}  // namespace prism

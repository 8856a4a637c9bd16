// TaskSpecs: the checks of task, actor and call options (what prism cannot honour fails before
// anything is sent), and the specs built from valid ones.
#include "worker/task_specs.h"

#include <gtest/gtest.h>
#include <prism/errors.h>

#include <cmath>
#include <string>

#include "base/ids.h"

namespace prism {
namespace {

constexpr uint64_t kGeneration = 515151;  // no runtime of this test process has it

TaskId Tid(uint8_t n) {
  return TaskId::FromBinary(std::string(TaskId::kSize, static_cast<char>(n)));
}

Submitter Who() {
  return Submitter{
      Tid(2), Tid(1), JobId::FromBinary(std::string(JobId::kSize, '\x07')),
      internal::OwnerAddress{"/tmp/caller.sock", std::string(16, 'w'), std::string(16, 'n')}};
}

internal::SerializedArg Value(std::string v) {
  internal::SerializedArg a;
  a.value = std::move(v);
  return a;
}

internal::SerializedArg Ref(uint8_t n) {
  internal::SerializedArg a;
  a.ref = std::make_shared<internal::RefHandle>(
      ObjectId::FromBinary(std::string(ObjectId::kSize, static_cast<char>(n))),
      internal::OwnerAddress{"/tmp/owner.sock", std::string(16, 'o'), ""}, kGeneration);
  return a;
}

template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const InvalidArgumentError& e) {
    return e.what();
  }
  return "";
}

TEST(TaskSpecsTest, BadTaskOptionsAreRefusedWithWhatIsWrong) {
  auto check = [](auto set) {
    TaskOptions o;
    set(o);
    return ErrorOf([&] { CheckTaskOptions(o); });
  };
  EXPECT_NE(check([](TaskOptions& o) { o.max_retries = -2; }).find("max_retries"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.num_cpus = -1; }).find("num_cpus"), std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.num_gpus = NAN; }).find("num_gpus"), std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.gpu_memory = 1 << 20; }).find("gpu_memory needs num_gpus"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.resources["CPU"] = 1; }).find("num_cpus"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.resources["memory"] = 1; }).find("TaskOptions::memory"),
            std::string::npos);
  EXPECT_NE(
      check([](TaskOptions& o) { o.env["1ABC"] = "x"; }).find("not a valid environment variable"),
      std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.env["PRISM_X"] = "x"; }).find("prism's own"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.env["A"] = std::string("a\0b", 3); }).find("NUL"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) { o.runtime = "java"; }).find("runtime"), std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) {
              o.placement_group_bundle_index = 0;
            }).find("placement_group is not"),
            std::string::npos);
  EXPECT_NE(check([](TaskOptions& o) {
              o.scheduling_strategy = static_cast<SchedulingStrategy>(42);
            }).find("unknown scheduling_strategy"),
            std::string::npos);
  PlacementGroup group(3, "g", PlacementStrategy::kPack, {{{"CPU", 1}}});
  EXPECT_NE(check([&](TaskOptions& o) {
              o.placement_group = group;
              o.placement_group_bundle_index = 1;
            }).find("out of range"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { CheckNumReturns(0); }).find("num_returns"), std::string::npos);
  EXPECT_NE(ErrorOf([] { CheckNumReturns(kMaxReturns + 1); }).find("num_returns"),
            std::string::npos);
  CheckNumReturns(kMaxReturns);
}

TEST(TaskSpecsTest, BadActorOptionsAreRefused) {
  ActorOptions o;
  o.max_concurrency = 0;
  EXPECT_NE(ErrorOf([&] { CheckActorOptions(o); }).find("max_concurrency"), std::string::npos);
  o.max_concurrency = 1;
  o.max_restarts = -2;
  EXPECT_NE(ErrorOf([&] { CheckActorOptions(o); }).find("max_restarts"), std::string::npos);
  o.max_restarts = 0;
  o.resources["GPU"] = 1;
  EXPECT_NE(ErrorOf([&] { CheckActorOptions(o); }).find("num_gpus"), std::string::npos);
}

TEST(TaskSpecsTest, ATaskSpecCarriesItsCallerArgumentsResourcesAndPlacement) {
  TaskOptions o;
  o.num_cpus = 0.5;
  o.num_gpus = 1;
  o.gpu_memory = 1 << 20;
  o.max_retries = 5;
  o.env["A"] = "1";
  o.runtime = "python";
  o.scheduling_strategy = SchedulingStrategy::kSpread;
  int checked_refs = 0;
  std::vector<internal::SerializedArg> args;
  args.push_back(Value("v"));
  args.push_back(Ref(9));
  args.back().nested.push_back(Ref(10).ref);
  PendingTask t = BuildTask(Who(), "f", std::move(args), o, CheckTaskOptions(o), 3,
                            [&](const internal::RefHandle&) { ++checked_refs; });
  EXPECT_EQ(checked_refs, 2);  // the ref argument and the ref inside it
  EXPECT_EQ(t.spec->task_id(), Tid(2).Binary());
  EXPECT_EQ(t.spec->parent_task_id(), Tid(1).Binary());
  EXPECT_EQ(t.spec->name(), "f");
  EXPECT_EQ(t.spec->num_returns(), 3u);
  EXPECT_EQ(t.spec->gpu_memory(), 1u << 20);
  EXPECT_EQ(t.spec->caller().socket_path(), "/tmp/caller.sock");
  ASSERT_EQ(t.spec->args_size(), 2);
  EXPECT_EQ(t.spec->args(0).value(), "v");
  EXPECT_EQ(t.spec->args(1).ref().owner().socket_path(), "/tmp/owner.sock");
  ASSERT_EQ(t.arg_refs.size(), 2u);
  EXPECT_EQ(t.arg_refs[0], nullptr);
  EXPECT_NE(t.arg_refs[1], nullptr);
  EXPECT_EQ(t.nested.size(), 1u);
  EXPECT_EQ(t.return_id, ReturnObjectId(Tid(2), 1));
  EXPECT_EQ(t.retries_left, 5);
  EXPECT_EQ(t.lease.runtime, "python");
  EXPECT_EQ(t.lease.env.at("A"), "1");
  EXPECT_EQ(t.lease.placement.strategy(), rpc::STRATEGY_SPREAD);
  EXPECT_EQ(t.lease.shape.milli().at("CPU"), 500);
  EXPECT_EQ(t.lease.shape.milli().at("GPU"), 1000);
  int resources = 0;
  for (const auto& r : t.spec->resources())
    resources += (r.name() == "CPU" && r.milli() == 500) ? 1 : 0;
  EXPECT_EQ(resources, 1);
}

TEST(TaskSpecsTest, AnActorsCreationAndItsCalls) {
  ActorOptions o;
  o.name = "svc";
  o.ray_namespace = "ns";
  o.max_restarts = 2;
  o.max_concurrency = 4;
  o.num_cpus = 2;
  o.env["B"] = "2";
  rpc::CreateActor c = BuildActorCreation(Who(), "MakeSvc", o, CheckActorOptions(o));
  EXPECT_EQ(c.spec().actor_creation().actor_id(), Tid(2).Binary());
  EXPECT_EQ(c.spec().name(), "svc");
  EXPECT_EQ(c.spec().function(), "MakeSvc");
  EXPECT_EQ(c.spec().actor_creation().max_concurrency(), 4u);
  EXPECT_EQ(c.spec().actor_creation().max_restarts(), 2);
  EXPECT_EQ(c.spec().actor_creation().owner().socket_path(), "/tmp/caller.sock");
  ASSERT_EQ(c.spec().actor_creation().env_size(), 1);
  ASSERT_EQ(c.resources_size(), 1);
  EXPECT_EQ(c.resources(0).milli(), 2000);
  EXPECT_EQ(c.spec().resources_size(), 1);  // its process reads what it holds from its spec
  EXPECT_EQ(c.spec().args_size(), 0);       // the caller adds the factory's arguments

  std::vector<internal::SerializedArg> args;
  args.push_back(Ref(4));
  PendingTask call =
      BuildActorCall(Who(), Tid(9), "Echo", std::move(args), 1, [](const internal::RefHandle&) {});
  EXPECT_EQ(call.spec->actor_id(), Tid(9).Binary());
  EXPECT_EQ(call.spec->function(), "Echo");
  EXPECT_EQ(call.spec->args(0).ref().object_id(), std::string(ObjectId::kSize, '\x04'));
  EXPECT_EQ(call.return_id, ReturnObjectId(Tid(2), 1));

  // A ref the core worker refuses stops the build.
  std::vector<internal::SerializedArg> stale;
  stale.push_back(Ref(5));
  EXPECT_THROW(
      BuildActorCall(Who(), Tid(9), "Echo", std::move(stale), 1,
                     [](const internal::RefHandle&) { throw InvalidArgumentError("stale"); }),
      InvalidArgumentError);
}

}  // namespace
}  // namespace prism

// ActorDirectory on its own: creation requests checked, names unique per namespace, restarts
// counted against max_restarts, kills, deaths (names freed, on_dead, old records trimmed), and
// what subscribers hear, read from the other end of a socket pair.
#include "control/actor_directory.h"

#include <gtest/gtest.h>

#include <asio.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/logging.h"
#include "core/peer_connection.h"
#include "rpc/frame.h"

namespace prism {
namespace {

using Subscriber = PeerConnection;

struct CreateOptions {
  std::string name;
  std::string ns;
  int max_restarts = 0;
  uint32_t max_concurrency = 1;
  std::map<std::string, int64_t> milli = {{"CPU", 1000}};
};

class ActorDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override { InitLogging("actor-directory-test", "warn"); }

  TaskId ActorId(uint64_t n) const { return ChildTaskId(DriverTaskId(job_), n); }
  rpc::CreateActor Request(const TaskId& id, const CreateOptions& o = {}) const {
    rpc::CreateActor req;
    auto* spec = req.mutable_spec();
    spec->set_task_id(id.Binary());
    spec->set_function("Counter");
    spec->add_args()->set_value("argument bytes");
    auto* c = spec->mutable_actor_creation();
    c->set_actor_id(id.Binary());
    c->set_name(o.name);
    c->set_ray_namespace(o.ns);
    c->set_max_restarts(o.max_restarts);
    c->set_max_concurrency(o.max_concurrency);
    c->set_max_task_retries(4);
    c->mutable_owner()->set_socket_path("/owner.sock");
    for (const auto& [name, milli] : o.milli) {
      auto* r = req.add_resources();
      r->set_name(name);
      r->set_milli(milli);
    }
    return req;
  }
  ActorRecord& Add(uint64_t n, const CreateOptions& o = {}) {
    auto created = dir_.Create(job_, true, Request(ActorId(n), o));
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    return *created->actor;
  }

  asio::io_context io_;
  NodeId node_ = NodeId::FromBinary(std::string(16, 'n'));
  JobId job_ = JobIdFromInt(5);
  std::vector<std::string> dead_seen_;  // "<hex>: <cause>", in the order on_dead ran
  ActorDirectory dir_{node_, [this](const ActorRecord& a) {
                        dead_seen_.push_back(a.id.Hex() + ": " + a.death_cause);
                      }};
};

TEST_F(ActorDirectoryTest, CreateAddsAPendingActorAndARetryFindsTheSameOne) {
  auto created = dir_.Create(job_, true, Request(ActorId(1), {.name = "counter"}));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(created->is_new);
  ActorRecord* a = created->actor;
  EXPECT_EQ(a->state, rpc::ACTOR_PENDING);
  EXPECT_EQ(a->job, job_);
  EXPECT_EQ(a->shape.Get("CPU"), 1000);
  EXPECT_EQ(dir_.Find(ActorId(1)), a);
  EXPECT_EQ(dir_.Find(ActorId(1).Binary()), a);
  EXPECT_EQ(dir_.Find(std::string("short")), nullptr);
  EXPECT_EQ(dir_.FindByName("", "counter"), a);
  // The creation task retried: the same actor, not a second one.
  auto again = dir_.Create(job_, true, Request(ActorId(1), {.name = "counter"}));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->is_new);
  EXPECT_EQ(again->actor, a);
  // The same id from another job is not a retry.
  auto other = dir_.Create(JobIdFromInt(6), true, Request(ActorId(1)));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dir_.all().size(), 1u);
}

TEST_F(ActorDirectoryTest, BadCreationRequestsAreRefusedWithTheirReasonAndAddNothing) {
  auto refused = [&](const rpc::CreateActor& req, StatusCode code, const std::string& says,
                     bool alive = true) {
    auto r = dir_.Create(job_, alive, req);
    ASSERT_FALSE(r.ok()) << says;
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().message();
  };
  rpc::CreateActor mismatch = Request(ActorId(1));
  mismatch.mutable_spec()->set_task_id(ActorId(2).Binary());
  refused(mismatch, StatusCode::kInvalidArgument, "creation task's id");
  rpc::CreateActor short_id = Request(ActorId(1));
  short_id.mutable_spec()->set_task_id("abc");
  short_id.mutable_spec()->mutable_actor_creation()->set_actor_id("abc");
  refused(short_id, StatusCode::kInvalidArgument, "16 bytes");
  refused(Request(ActorId(1), {.max_concurrency = 0}), StatusCode::kInvalidArgument,
          "max_concurrency");
  rpc::CreateActor env = Request(ActorId(1));
  auto* var = env.mutable_spec()->mutable_actor_creation()->add_env();
  var->set_name("PRISM_WORKER_ID");
  var->set_value("x");
  refused(env, StatusCode::kInvalidArgument, "invalid environment variable 'PRISM_WORKER_ID'");
  rpc::CreateActor twice = Request(ActorId(1));
  *twice.add_resources() = twice.resources(0);
  refused(twice, StatusCode::kInvalidArgument, "'CPU' appears twice");
  refused(Request(ActorId(1), {.milli = {{"CPU", -1000}}}), StatusCode::kInvalidArgument,
          "invalid resources");
  refused(Request(ActorId(1), {.milli = {{"GPU", 1500}}}), StatusCode::kInvalidArgument, "GPU");
  rpc::CreateActor bundle = Request(ActorId(1));
  bundle.mutable_placement()->set_bundle_index(-2);
  refused(bundle, StatusCode::kInvalidArgument, "bundle index");
  refused(Request(ActorId(1)), StatusCode::kNotFound, "job has ended", /*alive=*/false);
  EXPECT_TRUE(dir_.all().empty());
  EXPECT_TRUE(dir_.Create(job_, true, Request(ActorId(1))).ok()) << "the good request after them";
}

TEST_F(ActorDirectoryTest, NamesAreUniqueWithinANamespaceAndFreedWhenTheActorDies) {
  ActorRecord& first = Add(1, {.name = "svc", .ns = "a"});
  ActorRecord& elsewhere = Add(2, {.name = "svc", .ns = "b"});
  EXPECT_EQ(dir_.FindByName("a", "svc"), &first);
  EXPECT_EQ(dir_.FindByName("b", "svc"), &elsewhere);
  EXPECT_EQ(dir_.FindByName("", "svc"), nullptr);
  auto taken = dir_.Create(job_, true, Request(ActorId(3), {.name = "svc", .ns = "a"}));
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(taken.status().message().find("'svc' exists already in namespace 'a'"),
            std::string::npos)
      << taken.status().message();
  dir_.Dead(first, "gone");
  EXPECT_EQ(dir_.FindByName("a", "svc"), nullptr);
  ActorRecord& second = Add(3, {.name = "svc", .ns = "a"});
  EXPECT_EQ(dir_.FindByName("a", "svc"), &second);
  dir_.Dead(first, "gone again");  // idempotent: the new holder keeps the name
  EXPECT_EQ(dir_.FindByName("a", "svc"), &second);
  EXPECT_EQ(first.death_cause, "gone");
  EXPECT_EQ(dead_seen_.size(), 1u);
}

TEST_F(ActorDirectoryTest, AProcessDeathRestartsTheActorUntilItsRestartsAreUsedUp) {
  ActorRecord& a = Add(1, {.max_restarts = 2});
  a.worker = WorkerId::FromBinary(std::string(16, 'w'));
  a.socket_path = "/w.sock";
  EXPECT_TRUE(dir_.ProcessDied(a.id, "segfault"));
  EXPECT_EQ(a.state, rpc::ACTOR_RESTARTING);
  EXPECT_EQ(a.num_restarts, 1u);
  EXPECT_TRUE(a.worker.IsNil());
  EXPECT_TRUE(a.socket_path.empty());
  dir_.Alive(a);
  EXPECT_TRUE(dir_.ProcessDied(a.id, "segfault"));
  EXPECT_EQ(a.num_restarts, 2u);
  EXPECT_FALSE(dir_.ProcessDied(a.id, "oom"));
  EXPECT_TRUE(a.dead());
  EXPECT_EQ(a.num_restarts, 2u);
  EXPECT_EQ(a.death_cause, "its process died (oom) and its 2 restart(s) are used up");
  EXPECT_FALSE(dir_.ProcessDied(a.id, "again")) << "a dead actor does not come back";
  EXPECT_EQ(dead_seen_, std::vector<std::string>{a.id.Hex() + ": " + a.death_cause});
  // None allowed: the first death is the last; -1: it always comes back.
  ActorRecord& once = Add(2, {.max_restarts = 0});
  EXPECT_FALSE(dir_.ProcessDied(once.id, "exit 3"));
  EXPECT_EQ(once.death_cause, "its process died (exit 3)");
  ActorRecord& forever = Add(3, {.max_restarts = -1});
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(dir_.ProcessDied(forever.id, "crash"));
  EXPECT_EQ(forever.num_restarts, 20u);
  EXPECT_FALSE(dir_.ProcessDied(ActorId(99), "unknown")) << "not an actor";
}

TEST_F(ActorDirectoryTest, AKillWithoutRestartEndsTheActorWhenItsProcessEnds) {
  ActorRecord& a = Add(1, {.max_restarts = 5});
  dir_.RequestKill(a, /*no_restart=*/false, "restart it");
  EXPECT_FALSE(a.kill_requested);
  EXPECT_TRUE(dir_.ProcessDied(a.id, "SIGKILL")) << "a plain kill restarts it";
  dir_.RequestKill(a, /*no_restart=*/true, "user asked");
  EXPECT_FALSE(a.dead()) << "dead only once its process ended";
  EXPECT_FALSE(dir_.ProcessDied(a.id, "SIGKILL"));
  EXPECT_TRUE(a.dead());
  EXPECT_EQ(a.death_cause, "user asked");
  EXPECT_EQ(a.num_restarts, 1u);
  ActorRecord& b = Add(2, {.max_restarts = 5});
  dir_.RequestKill(b, true, "");
  EXPECT_FALSE(dir_.ProcessDied(b.id, "SIGKILL"));
  EXPECT_EQ(b.death_cause, "it was killed");
}

TEST_F(ActorDirectoryTest, ASubscriptionByIdIsToldTheStateNowAndAnUnknownActorIsDead) {
  Subscriber sub(io_);
  ActorRecord& a = Add(1, {.name = "svc"});
  dir_.Subscribe(a.id.Binary(), *sub.conn);
  auto now = sub.Frames();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].actor_update().state(), rpc::ACTOR_PENDING);
  EXPECT_EQ(a.subscribers.size(), 1u);
  dir_.Alive(a);
  EXPECT_EQ(sub.Frames().size(), 1u) << "it hears of changes from then on";
  const std::string unknown(16, 'u');
  dir_.Subscribe(unknown, *sub.conn);
  dir_.Subscribe("not an id", *sub.conn);
  auto dead = sub.Frames();
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0].actor_update().actor_id(), unknown);
  EXPECT_EQ(dead[0].actor_update().state(), rpc::ACTOR_DEAD);
  EXPECT_EQ(dead[0].actor_update().death_cause(), "this cluster has no such actor");
  EXPECT_EQ(dead[1].actor_update().state(), rpc::ACTOR_DEAD);
  EXPECT_EQ(dir_.all().size(), 1u) << "asking adds nothing";
}

TEST_F(ActorDirectoryTest, SubscribersHearEachChangeOnceAndClosedOnesAreDropped) {
  Subscriber one(io_), two(io_);
  ActorRecord& a = Add(1, {.name = "svc", .max_restarts = 1});
  dir_.Subscribe(a, *one.conn);
  dir_.Subscribe(a, *one.conn);  // asked twice, told once
  dir_.Subscribe(a, *two.conn);
  EXPECT_EQ(a.subscribers.size(), 2u);
  a.worker = WorkerId::FromBinary(std::string(16, 'w'));
  a.socket_path = "/w.sock";
  dir_.Alive(a);
  auto alive = one.Frames();
  ASSERT_EQ(alive.size(), 1u);
  ASSERT_TRUE(alive[0].has_actor_update());
  const rpc::ActorUpdate& u = alive[0].actor_update();
  EXPECT_EQ(u.request_id(), 0u);
  EXPECT_EQ(u.actor_id(), a.id.Binary());
  EXPECT_EQ(u.state(), rpc::ACTOR_ALIVE);
  EXPECT_EQ(u.address().socket_path(), "/w.sock");
  EXPECT_EQ(u.address().worker_id(), a.worker.Binary());
  EXPECT_EQ(u.address().node_id(), node_.Binary());
  EXPECT_EQ(u.name(), "svc");
  EXPECT_EQ(u.owner().socket_path(), "/owner.sock");
  EXPECT_EQ(u.max_task_retries(), 4);
  EXPECT_EQ(two.Frames().size(), 1u);
  // A restart: no address while it has no process.
  ASSERT_TRUE(dir_.ProcessDied(a.id, "crash"));
  auto restarting = one.Frames();
  ASSERT_EQ(restarting.size(), 1u);
  EXPECT_EQ(restarting[0].actor_update().state(), rpc::ACTOR_RESTARTING);
  EXPECT_EQ(restarting[0].actor_update().num_restarts(), 1u);
  EXPECT_FALSE(restarting[0].actor_update().has_address());
  EXPECT_EQ(two.Frames().size(), 1u);
  // A subscriber that went is skipped, and forgotten.
  two.conn->Close(Status::OK());
  io_.poll();
  dir_.Alive(a);
  EXPECT_EQ(one.Frames().size(), 1u);
  EXPECT_EQ(a.subscribers.size(), 1u);
  EXPECT_FALSE(dir_.ProcessDied(a.id, "crash"));
  auto dead = one.Frames();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].actor_update().state(), rpc::ACTOR_DEAD);
  EXPECT_EQ(dead[0].actor_update().death_cause(), a.death_cause);
  EXPECT_NE(a.death_cause.find("crash"), std::string::npos);
}

TEST_F(ActorDirectoryTest, DeathTellsSubscribersThenRunsOnDeadAndDropsTheArguments) {
  Subscriber sub(io_);
  uint64_t queued_at_on_dead = 0;
  ActorDirectory dir(node_, [&](const ActorRecord& a) {
    EXPECT_TRUE(a.dead());
    queued_at_on_dead = sub.conn->frames_queued();
  });
  auto created = dir.Create(job_, true, Request(ActorId(1), {.name = "svc"}));
  ASSERT_TRUE(created.ok());
  ActorRecord& a = *created->actor;
  dir.Subscribe(a, *sub.conn);
  EXPECT_EQ(dir.Live([](const ActorRecord&) { return true; }), std::vector<TaskId>{a.id});
  dir.Dead(a, "its owner died");
  EXPECT_EQ(queued_at_on_dead, 1u) << "subscribers are told before on_dead runs";
  EXPECT_EQ(a.spec.args_size(), 0);
  EXPECT_EQ(a.spec.actor_creation().name(), "svc") << "the short record stays";
  EXPECT_TRUE(dir.Live([](const ActorRecord&) { return true; }).empty());
  EXPECT_EQ(dir.Find(a.id), &a) << "a dead actor is remembered";
  // A late subscriber can still be told how it ended, answering its request.
  Subscriber late(io_);
  dir.SendUpdate(*late.conn, a, 77);
  auto frames = late.Frames();
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].actor_update().request_id(), 77u);
  EXPECT_EQ(frames[0].actor_update().state(), rpc::ACTOR_DEAD);
  EXPECT_EQ(frames[0].actor_update().death_cause(), "its owner died");
}

TEST_F(ActorDirectoryTest, OnlyTheNewestTenThousandDeadRecordsAreKept) {
  constexpr uint64_t kKept = 10000;
  for (uint64_t n = 1; n <= kKept + 2; ++n) dir_.Dead(Add(n), "done");
  EXPECT_EQ(dir_.all().size(), kKept);
  EXPECT_EQ(dir_.Find(ActorId(1)), nullptr);
  EXPECT_EQ(dir_.Find(ActorId(2)), nullptr);
  ASSERT_NE(dir_.Find(ActorId(3)), nullptr);
  EXPECT_TRUE(dir_.Find(ActorId(3))->dead());
  EXPECT_EQ(dead_seen_.size(), kKept + 2);
  // Live actors are never trimmed, however many die after them.
  ActorRecord& live = Add(kKept + 3);
  for (uint64_t n = kKept + 4; n <= 2 * kKept + 5; ++n) dir_.Dead(Add(n), "done");
  EXPECT_EQ(dir_.Find(live.id), &live);
  EXPECT_EQ(dir_.Live([](const ActorRecord&) { return true; }), std::vector<TaskId>{live.id});
  EXPECT_EQ(dir_.all().size(), kKept + 1);
}

TEST_F(ActorDirectoryTest, LiveListsTheActorsNotDeadThatMatch) {
  ActorRecord& a = Add(1);
  ActorRecord& b = Add(2);
  ActorRecord& c = Add(3);
  b.spec.mutable_actor_creation()->set_detached(true);
  c.spec.mutable_actor_creation()->set_detached(true);
  dir_.Dead(c, "done");
  EXPECT_EQ(dir_.Live([](const ActorRecord& r) { return r.detached(); }),
            std::vector<TaskId>{b.id});
  EXPECT_EQ(dir_.Live([](const ActorRecord& r) { return !r.detached(); }),
            std::vector<TaskId>{a.id});
}

}  // namespace
}  // namespace prism

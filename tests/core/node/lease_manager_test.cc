// LeaseManager with a real WorkerPool whose launcher is a fake (it records each launch and makes
// up a pid; nothing is forked): requests checked, queued, granted and returned as the callers'
// frames show them; leases that end under their holder; blocked workers; the worker cap; start
// failures; actors' requests; placement-group bundles.
#include "node/lease_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/logging.h"
#include "core/peer_connection.h"
#include "rpc/frame.h"

namespace prism {
namespace {

// Above any pid_max (at most 2^22): should a kill() reach one, it finds no process.
constexpr pid_t kFakePidBase = 1'000'000'000;

class FakeLauncher : public WorkerLauncher {
 public:
  Result<pid_t> Launch(const WorkerLaunch& launch) override {
    launches.push_back(launch);
    if (!fail_with.empty()) return Status::IOError(fail_with);
    return static_cast<pid_t>(kFakePidBase + launches.size());
  }
  std::vector<WorkerLaunch> launches;
  std::string fail_with;  // non-empty: every launch fails with this
};

// The value of `name` in a launch's environment ("<unset>" if absent; "<twice>" if repeated).
std::string EnvOf(const WorkerLaunch& l, const std::string& name) {
  std::string found = "<unset>";
  for (const auto& e : l.env) {
    if (e.rfind(name + "=", 0) == 0)
      found = found == "<unset>" ? e.substr(name.size() + 1) : "<twice>";
  }
  return found;
}

using Peer = PeerConnection;

// The rest of the node as the daemon is to the lease manager.
class FakeHost : public LeaseManager::Host {
 public:
  FakeHost(PlacementGroups& groups, WorkerPool& pool) : groups_(groups), pool_(pool) {}
  void ReserveGroups() override {
    groups_.Reserve([](PlacementGroupRecord&) {});
  }
  bool ActorWaits(const TaskId& actor) override { return waiting.count(actor) > 0; }
  void ActorUnplaceable(const TaskId& actor, const std::string& why) override {
    unplaceable[actor] = why;
    waiting.erase(actor);
  }
  void ActorPlaced(const TaskId& actor, WorkerPool::Worker& w, uint64_t lease,
                   const Allocation&) override {
    w.actor = actor;
    placed[actor] = {w.id, lease};
    waiting.erase(actor);
  }
  // As the daemon's: the worker leaves the pool, its lease ends, and a pass runs.
  void KillWorker(const WorkerId& id, const std::string& why) override {
    killed.emplace_back(id, why);
    if (std::optional<WorkerPool::Worker> w = pool_.Take(id)) {
      leases->WorkerRemoved(*w);
      leases->Schedule();
    }
  }

  // The daemon runs a pass after the delay; tests run it themselves (RunRetry).
  void ScheduleAfter(std::chrono::milliseconds delay) override { retries.push_back(delay); }
  const ClusterView& Cluster() override { return view; }

  LeaseManager* leases = nullptr;
  ClusterView view;  // this node alone unless a test adds others
  std::vector<std::chrono::milliseconds> retries;
  std::set<TaskId> waiting;
  std::map<TaskId, std::string> unplaceable;
  std::map<TaskId, std::pair<WorkerId, uint64_t>> placed;
  std::vector<std::pair<WorkerId, std::string>> killed;

 private:
  PlacementGroups& groups_;
  WorkerPool& pool_;
};

ResourceSet Shape(const std::map<std::string, int64_t>& milli) {
  return *ResourceSet::FromMilli(milli);
}

// A node as the control service lists it.
rpc::NodeInfo NodeEntry(const std::string& id, const ResourceSet& total, const ResourceSet& free,
                        int port = 7000) {
  rpc::NodeInfo n;
  n.set_node_id(id);
  n.set_ip("10.0.0.1");
  n.set_port(port);
  for (const auto& [name, milli] : total.milli()) {
    auto* t = n.add_total();
    t->set_name(name);
    t->set_milli(milli);
    auto* a = n.add_available();
    a->set_name(name);
    a->set_milli(free.Get(name));
  }
  return n;
}

rpc::RequestLease Req(uint64_t rid, const std::map<std::string, int64_t>& milli = {{"CPU", 1000}}) {
  rpc::RequestLease r;
  r.set_request_id(rid);
  for (const auto& [name, m] : milli) {
    auto* a = r.add_resources();
    a->set_name(name);
    a->set_milli(m);
  }
  return r;
}

class LeaseManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("lease-manager-test", "off");  // launch failures are logged as errors
    setenv("CUDA_VISIBLE_DEVICES", "4,6", 1);  // the daemon's own: GPU instance i is its i-th
    WorkerPoolConfig pc;
    pc.session_dir = "/nonexistent-session";
    pool_ = std::make_unique<WorkerPool>(io_, launcher_, pc);
    AddJob(1);
    Make(4, Shape({{"CPU", 2000}, {"GPU", 2000}}));
  }
  void Make(int max_workers, const ResourceSet& node, bool fixed_size = true) {
    LeaseManagerConfig c;
    c.resources = node;
    c.max_workers = max_workers;
    c.fixed_size = fixed_size;
    leases_.reset();
    node_ = *ResourcePool::Create(node);
    groups_ = std::make_unique<PlacementGroups>(node_, node.ToString(), false);
    host_ = std::make_unique<FakeHost>(*groups_, *pool_);
    host_->view.self = NodeEntry(node_id_.Binary(), node, node);
    leases_ = std::make_unique<LeaseManager>(c, node_id_, node_, *groups_, *pool_, *host_);
    host_->leases = leases_.get();
  }
  WorkerPool::Job& AddJob(uint32_t n) {
    WorkerPool::Job j;
    j.id = JobIdFromInt(n);
    j.build_id = "build-1";
    j.argv = {"driver", "--flag"};
    j.env = {"KEEP=1", "PRISM_WORKER_ID=stale", "A=0"};
    pool_->AddJob(std::move(j));
    return *pool_->FindJob(JobIdFromInt(n));
  }
  // Registers the worker of the i-th launch, as its Hello from `pid` (default: the launched one).
  Result<WorkerId> Register(size_t i, pid_t pid = 0, const std::string& build = "build-1") {
    const WorkerLaunch& l = launcher_.launches.at(i);
    rpc::Hello hello;
    hello.set_worker_id(UniqueIdFromHex(EnvOf(l, "PRISM_WORKER_ID")).Binary());
    hello.set_build_id(build);
    workers_.push_back(std::make_unique<Peer>(io_));
    return pool_->Register(hello, pid != 0 ? pid : kFakePidBase + static_cast<pid_t>(i) + 1,
                           workers_.back()->conn);
  }
  // Requests a lease for `caller`, registers the worker started for it and returns the grant.
  rpc::LeaseGrant Granted(Peer& caller, uint64_t rid,
                          const std::map<std::string, int64_t>& milli = {{"CPU", 1000}}) {
    leases_->Request(*caller.conn, job_, Req(rid, milli));
    EXPECT_TRUE(Register(launcher_.launches.size() - 1).ok());
    leases_->Schedule();
    return caller.One().lease_grant();
  }
  void Return(Peer& caller, uint64_t lease, bool worker_failed = false) {
    rpc::ReturnLease r;
    r.set_lease_id(lease);
    r.set_worker_failed(worker_failed);
    leases_->Return(*caller.conn, r);
  }
  int64_t Free(const std::string& r) const { return node_.available().Get(r); }

  asio::io_context io_;
  FakeLauncher launcher_;
  std::unique_ptr<WorkerPool> pool_;
  ResourcePool node_;
  std::unique_ptr<PlacementGroups> groups_;
  std::unique_ptr<FakeHost> host_;
  std::unique_ptr<LeaseManager> leases_;
  NodeId node_id_ = NodeId::FromBinary(std::string(16, 'n'));
  std::vector<std::unique_ptr<Peer>> workers_;
  JobId job_ = JobIdFromInt(1);
};

TEST_F(LeaseManagerTest, PoolLaunchesWithTheJobsEnvironmentAndRegistersTheLaunchedPid) {
  pool_->Start(*pool_->FindJob(job_), {{"A", "1"}}, "A=1", "", {1});
  ASSERT_EQ(launcher_.launches.size(), 1u);
  const WorkerLaunch& l = launcher_.launches[0];
  EXPECT_EQ(l.argv, (std::vector<std::string>{"driver", "--flag"}));
  EXPECT_EQ(EnvOf(l, "KEEP"), "1");
  EXPECT_EQ(EnvOf(l, "A"), "1") << "the request's value replaces the driver's";
  EXPECT_EQ(EnvOf(l, "CUDA_VISIBLE_DEVICES"), "6");
  EXPECT_EQ(EnvOf(l, "PRISM_JOB_ID"), "1");
  EXPECT_EQ(EnvOf(l, "PRISM_SESSION_DIR"), "/nonexistent-session");
  EXPECT_NE(EnvOf(l, "PRISM_WORKER_ID"), "stale");
  EXPECT_EQ(pool_->Starting(job_, "A=1"), 1);
  EXPECT_EQ(pool_->FindIdle(job_, "A=1"), nullptr);
  auto id = Register(0);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  WorkerPool::Worker* w = pool_->FindIdle(job_, "A=1");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->id, *id);
  EXPECT_EQ(w->process, kFakePidBase + 1);
  EXPECT_EQ(pool_->Starting(job_, "A=1"), 0);
  EXPECT_EQ(pool_->FindIdle(job_, ""), nullptr) << "another environment's worker";
  std::optional<WorkerPool::Worker> taken = pool_->Take(*id);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(pool_->Find(*id), nullptr);
  EXPECT_FALSE(pool_->Take(*id).has_value());
}

TEST_F(LeaseManagerTest, PoolRefusesStrangersWrongProcessesAndForeignBuilds) {
  WorkerPool::Job& job = *pool_->FindJob(job_);
  for (int i = 0; i < 2; ++i) pool_->Start(job, {}, "", "", {});
  rpc::Hello stranger;
  stranger.set_worker_id(std::string(16, 'x'));
  EXPECT_EQ(pool_->Register(stranger, kFakePidBase + 1, nullptr).status().code(),
            StatusCode::kNotFound);
  stranger.set_worker_id("short");
  EXPECT_EQ(pool_->Register(stranger, kFakePidBase + 1, nullptr).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(Register(0, getpid()).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(Register(0).ok()) << "still the launched process's to claim";
  EXPECT_EQ(Register(0).status().code(), StatusCode::kNotFound) << "registered once";
  auto foreign = Register(1, 0, "build-2");
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(foreign.status().message().find("rebuilt"), std::string::npos)
      << foreign.status().message();
  EXPECT_EQ(job.start_failures, 3) << "no point in starting more";
  pool_->Start(job, {}, "", "", {});
  pool_->EraseJob(job_);
  EXPECT_EQ(Register(2).status().code(), StatusCode::kNotFound);
}

TEST_F(LeaseManagerTest, PoolCountsAFailedStartAgainstItsJob) {
  WorkerPool::Job& job = *pool_->FindJob(job_);
  launcher_.fail_with = "fork: Resource temporarily unavailable";
  pool_->Start(job, {}, "", "", {});
  EXPECT_TRUE(pool_->all().empty());
  EXPECT_EQ(pool_->started_total(), 0u);
  EXPECT_EQ(job.start_failures, 1);
  EXPECT_EQ(job.last_start_failure, launcher_.fail_with);
  job.python_executable = "/nonexistent/python3";
  pool_->Start(job, {}, "", "python", {});
  EXPECT_EQ(launcher_.launches.size(), 1u) << "nothing to launch";
  EXPECT_EQ(job.start_failures, pool_->max_start_failures()) << "trying again cannot help";
  EXPECT_TRUE(job.start_failure_final);
  EXPECT_NE(job.last_start_failure.find("cannot open the Python interpreter"), std::string::npos);
}

TEST_F(LeaseManagerTest, GrantsARegisteredWorkerWithItsDevicesAndTakesItBackOnReturn) {
  Peer caller(io_);
  rpc::LeaseGrant g = Granted(caller, 7, {{"CPU", 1000}, {"GPU", 1000}});
  EXPECT_EQ(EnvOf(launcher_.launches.at(0), "CUDA_VISIBLE_DEVICES"), "4");
  EXPECT_EQ(g.request_id(), 7u);
  ASSERT_NE(g.lease_id(), 0u);
  WorkerId wid = WorkerId::FromBinary(g.worker().worker_id());
  ASSERT_NE(pool_->Find(wid), nullptr);
  EXPECT_EQ(g.worker().socket_path(), pool_->Find(wid)->socket_path);
  EXPECT_EQ(g.worker().node_id(), node_id_.Binary());
  ASSERT_EQ(g.devices_size(), 1);
  EXPECT_EQ(g.devices(0).resource(), "GPU");
  EXPECT_EQ(g.devices(0).index(), 0);
  EXPECT_EQ(g.devices(0).milli(), 1000);
  EXPECT_EQ(Free("CPU"), 1000);
  EXPECT_EQ(Free("GPU"), 1000);
  EXPECT_EQ(leases_->active(), 1u);
  EXPECT_EQ(leases_->WorkersHeldBy(caller.conn.get()), std::vector<WorkerId>{wid});
  Return(caller, g.lease_id());
  EXPECT_TRUE(caller.Frames().empty()) << "a good return is not answered";
  EXPECT_EQ(leases_->active(), 0u);
  EXPECT_EQ(Free("CPU"), 2000);
  EXPECT_EQ(pool_->Find(wid)->state, WorkerPool::State::kIdle);
  // The idle worker serves the next request of its kind at once.
  leases_->Request(*caller.conn, job_, Req(8, {{"CPU", 1000}, {"GPU", 1000}}));
  rpc::LeaseGrant again = caller.One().lease_grant();
  EXPECT_EQ(again.worker().worker_id(), wid.Binary());
  EXPECT_NE(again.lease_id(), g.lease_id());
  EXPECT_EQ(launcher_.launches.size(), 1u);
  EXPECT_EQ(leases_->granted_total(), 2u);
}

TEST_F(LeaseManagerTest, BadRequestsAreRejectedAtOnceWithTheirReason) {
  Peer caller(io_);
  auto rejected = [&](rpc::RequestLease r, const std::string& says,
                      const JobId& job = JobIdFromInt(1)) {
    leases_->Request(*caller.conn, job, r);
    rpc::Envelope e = caller.One();
    ASSERT_TRUE(e.has_lease_rejected()) << says;
    EXPECT_EQ(e.lease_rejected().request_id(), r.request_id());
    EXPECT_EQ(e.lease_rejected().kind(), rpc::ERROR_SYSTEM);
    EXPECT_NE(e.lease_rejected().message().find(says), std::string::npos)
        << e.lease_rejected().message();
  };
  rpc::RequestLease twice = Req(1);
  *twice.add_resources() = twice.resources(0);
  rejected(twice, "'CPU' appears twice");
  rejected(Req(2, {{"CPU", -5}}), "invalid resource request");
  rejected(Req(3, {{"GPU", 1500}}), "invalid resource request");
  rpc::RequestLease bundle = Req(4);
  bundle.mutable_placement()->set_bundle_index(-2);
  rejected(bundle, "bundle index");
  rpc::RequestLease java = Req(5);
  java.set_runtime("java");
  rejected(java, "unknown worker runtime 'java'");
  rpc::RequestLease python = Req(6);
  python.set_runtime("python");
  rejected(python, "names no Python interpreter");
  rpc::RequestLease cpp = Req(7);
  cpp.set_runtime("cpp");
  rejected(cpp, "cannot start generic C++ workers");
  rpc::RequestLease env = Req(8);
  env.add_env()->set_name("PRISM_SESSION_DIR");
  rejected(env, "invalid environment variable 'PRISM_SESSION_DIR'");
  rpc::RequestLease eq = Req(9);
  eq.add_env()->set_name("A=B");
  rejected(eq, "invalid environment variable");
  rejected(Req(10), "job 9 has ended", JobIdFromInt(9));
  pool_->FindJob(job_)->ended = true;  // a job whose driver left: checked when it is scheduled
  rejected(Req(11), "job 1 has ended");
  EXPECT_TRUE(leases_->pending().empty());
  EXPECT_TRUE(launcher_.launches.empty());
}

TEST_F(LeaseManagerTest, InfeasibleRequestsFailOnAFixedClusterAndWaitOnOneThatMayGrow) {
  Peer caller(io_);
  leases_->Request(*caller.conn, job_, Req(1, {{"CPU", 8000}}));
  rpc::Envelope e = caller.One();
  ASSERT_TRUE(e.has_lease_rejected());
  EXPECT_EQ(e.lease_rejected().kind(), rpc::ERROR_INFEASIBLE);
  EXPECT_NE(e.lease_rejected().message().find("no node can ever run this task"), std::string::npos);
  Make(4, Shape({{"CPU", 2000}}), /*fixed_size=*/false);
  leases_->Request(*caller.conn, job_, Req(2, {{"CPU", 8000}}));
  leases_->Schedule();
  e = caller.One();  // told once, however often it is looked at
  ASSERT_TRUE(e.has_lease_queued());
  EXPECT_EQ(e.lease_queued().request_id(), 2u);
  EXPECT_TRUE(e.lease_queued().infeasible());
  EXPECT_EQ(leases_->pending().size(), 1u);
  EXPECT_TRUE(launcher_.launches.empty());
}

TEST_F(LeaseManagerTest, AReturnOfALeaseNotHeldIsAnErrorAndChangesNothing) {
  Peer caller(io_), other(io_);
  rpc::LeaseGrant g = Granted(caller, 1);
  auto not_held = [](Peer& p, const std::string& says) {
    rpc::Envelope e = p.One();
    ASSERT_TRUE(e.has_error());
    EXPECT_EQ(e.error().code(), static_cast<uint32_t>(StatusCode::kNotFound));
    EXPECT_NE(e.error().message().find(says), std::string::npos) << e.error().message();
  };
  Return(caller, 4242);
  not_held(caller, "lease 4242 is not held by this connection");
  Return(other, g.lease_id());
  not_held(other, "not held by this connection");
  EXPECT_EQ(leases_->active(), 1u);
  EXPECT_EQ(Free("CPU"), 1000);
  Return(caller, g.lease_id());
  EXPECT_TRUE(caller.Frames().empty());
  Return(caller, g.lease_id());
  not_held(caller, "returned twice");
  EXPECT_EQ(Free("CPU"), 2000);
}

TEST_F(LeaseManagerTest, AWorkerRemovedUnderItsLeaseEndsItAndItsReturnIsSilentOnce) {
  Peer caller(io_);
  rpc::LeaseGrant g = Granted(caller, 1);
  WorkerId wid = WorkerId::FromBinary(g.worker().worker_id());
  host_->KillWorker(wid, "it crashed");
  EXPECT_EQ(leases_->active(), 0u);
  EXPECT_EQ(Free("CPU"), 2000);
  Return(caller, g.lease_id(), /*worker_failed=*/true);
  EXPECT_TRUE(caller.Frames().empty()) << "expected: its holder noticed late";
  EXPECT_EQ(host_->killed.size(), 1u) << "nothing left to kill";
  Return(caller, g.lease_id());
  EXPECT_TRUE(caller.One().has_error()) << "once only";
  // A holder that lost its worker says so: the worker is ended, not reused.
  rpc::LeaseGrant lost = Granted(caller, 2);
  WorkerId second = WorkerId::FromBinary(lost.worker().worker_id());
  Return(caller, lost.lease_id(), /*worker_failed=*/true);
  ASSERT_EQ(host_->killed.size(), 2u);
  EXPECT_EQ(host_->killed[1].first, second);
  EXPECT_EQ(pool_->Find(second), nullptr);
  EXPECT_EQ(Free("CPU"), 2000);
}

TEST_F(LeaseManagerTest, ABlockedWorkerLendsItsCpusAndItsPlaceUnderTheCap) {
  Make(1, Shape({{"CPU", 1000}}));
  Peer caller(io_);
  rpc::LeaseGrant first = Granted(caller, 1);
  const WorkerPool::Worker& w1 = *pool_->Find(WorkerId::FromBinary(first.worker().worker_id()));
  leases_->Request(*caller.conn, job_, Req(2));
  EXPECT_TRUE(caller.One().has_lease_queued());
  leases_->SetBlocked(w1, true);
  EXPECT_EQ(launcher_.launches.size(), 2u) << "its CPU and its place run what it waits for";
  ASSERT_TRUE(Register(1).ok());
  leases_->Schedule();
  rpc::LeaseGrant second = caller.One().lease_grant();
  EXPECT_EQ(second.request_id(), 2u);
  EXPECT_EQ(Free("CPU"), 0);
  leases_->SetBlocked(w1, true);  // no change: lent once
  EXPECT_EQ(Free("CPU"), 0);
  leases_->SetBlocked(w1, false);
  EXPECT_EQ(Free("CPU"), -1000) << "it takes its CPU back, overcommitting the node a while";
  leases_->SetBlocked(w1, true);
  Return(caller, first.lease_id());  // while blocked: what it lent is not given back twice
  EXPECT_EQ(Free("CPU"), 0);
  Return(caller, second.lease_id());
  EXPECT_EQ(Free("CPU"), 1000);
}

TEST_F(LeaseManagerTest, AtTheCapAnIdleWorkerOfAnotherJobMakesRoom) {
  Make(1, Shape({{"CPU", 2000}}));
  AddJob(2);
  Peer one(io_), two(io_);
  rpc::LeaseGrant g = Granted(one, 1);
  WorkerId idle = WorkerId::FromBinary(g.worker().worker_id());
  Return(one, g.lease_id());
  leases_->Request(*two.conn, JobIdFromInt(2), Req(1));
  ASSERT_EQ(host_->killed.size(), 1u);
  EXPECT_EQ(host_->killed[0].first, idle);
  EXPECT_EQ(host_->killed[0].second, "making room for another job's workers");
  ASSERT_EQ(launcher_.launches.size(), 2u);
  EXPECT_EQ(EnvOf(launcher_.launches[1], "PRISM_JOB_ID"), "2");
  ASSERT_TRUE(Register(1).ok());
  leases_->Schedule();
  EXPECT_TRUE(two.One().has_lease_grant());
  // No idle worker to stop now: job 1 waits, and is told so.
  leases_->Request(*one.conn, job_, Req(2));
  EXPECT_TRUE(one.One().has_lease_queued());
  EXPECT_EQ(launcher_.launches.size(), 2u);
  EXPECT_EQ(host_->killed.size(), 1u);
}

TEST_F(LeaseManagerTest, AJobWhoseWorkersFailToStartHasItsRequestsFail) {
  launcher_.fail_with = "fork: Cannot allocate memory";
  Peer caller(io_);
  // No worker will register to start another pass: a failed start asks for one after a pause that
  // doubles, until the job's failures reject the request (a caller waiting in Get on a quiet
  // node must not hang, and a passing fork failure gets time to pass).
  leases_->Request(*caller.conn, job_, Req(1));
  EXPECT_EQ(launcher_.launches.size(), 1u) << "one try per pass";
  for (size_t pass = 0; pass < 10 && host_->retries.size() > pass; ++pass) leases_->Schedule();
  using std::chrono::milliseconds;
  EXPECT_EQ(host_->retries, (std::vector<milliseconds>{milliseconds(100), milliseconds(200)}))
      << "the third failure rejects at once";
  std::vector<rpc::Envelope> frames = caller.Frames();
  EXPECT_EQ(launcher_.launches.size(), 3u) << "max_start_failures tries";
  ASSERT_EQ(frames.size(), 2u) << "told it waits once, then why it fails";
  EXPECT_TRUE(frames[0].has_lease_queued());
  ASSERT_TRUE(frames[1].has_lease_rejected());
  EXPECT_EQ(frames[1].lease_rejected().message(),
            "workers for this job fail to start: fork: Cannot allocate memory");
  leases_->Request(*caller.conn, job_, Req(2));
  EXPECT_TRUE(caller.One().has_lease_rejected()) << "the next request fails at once";
  EXPECT_EQ(launcher_.launches.size(), 3u);
}

TEST_F(LeaseManagerTest, ActorRequestsArePlacedOrRefusedThroughTheHost) {
  TaskId actor = ChildTaskId(DriverTaskId(job_), 1), gone = ChildTaskId(DriverTaskId(job_), 2),
         huge = ChildTaskId(DriverTaskId(job_), 3);
  host_->waiting = {actor, huge};
  auto add = [&](const TaskId& a, const ResourceSet& shape) {
    LeaseRequest r;
    r.job = job_;
    r.shape = shape;
    r.actor = a;
    leases_->Add(r);
  };
  add(actor, Shape({{"CPU", 1000}}));
  add(gone, Shape({{"CPU", 1000}}));  // it no longer waits: dropped
  add(huge, Shape({{"CPU", 9000}}));
  leases_->Schedule();
  EXPECT_NE(host_->unplaceable[huge].find("no node can ever run this task"), std::string::npos);
  ASSERT_EQ(launcher_.launches.size(), 1u);
  EXPECT_EQ(leases_->pending().size(), 1u);
  pool_->FindJob(job_)->ended = true;  // an actor (a detached one) outlives its driver
  ASSERT_TRUE(Register(0).ok());
  leases_->Schedule();
  ASSERT_EQ(host_->placed.count(actor), 1u);
  auto [wid, lease] = host_->placed[actor];
  EXPECT_EQ(pool_->Find(wid)->state, WorkerPool::State::kLeased);
  EXPECT_EQ(pool_->Find(wid)->lease_id, lease);
  EXPECT_EQ(leases_->WorkersHeldBy(nullptr), std::vector<WorkerId>{wid});
  EXPECT_EQ(host_->placed.count(gone), 0u);
  EXPECT_TRUE(leases_->pending().empty());
  EXPECT_EQ(Free("CPU"), 1000);
}

TEST_F(LeaseManagerTest, LeasesInAPlacementGroupDrawFromItsBundles) {
  Peer caller(io_);
  rpc::CreatePlacementGroup pg;
  auto* r = pg.add_bundles()->add_resources();
  r->set_name("CPU");
  r->set_milli(1000);
  auto id = groups_->Add(job_, pg, true);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto placed = [&](uint64_t rid, uint64_t group, int bundle) {
    rpc::RequestLease req = Req(rid);
    req.mutable_placement()->set_placement_group(group);
    req.mutable_placement()->set_bundle_index(bundle);
    return req;
  };
  leases_->Request(*caller.conn, job_, placed(1, *id, 0));  // the pass reserves the group first
  ASSERT_TRUE(Register(0).ok());
  leases_->Schedule();
  rpc::LeaseGrant g = caller.One().lease_grant();
  EXPECT_EQ(g.request_id(), 1u);
  PlacementGroupRecord& group = *groups_->Find(*id);
  EXPECT_EQ(group.pools[0].available().Get("CPU"), 0);
  EXPECT_EQ(Free("CPU"), 1000) << "the node gave the group its bundle, no more";
  EXPECT_EQ(leases_->WorkersInGroup(*id),
            std::vector<WorkerId>{WorkerId::FromBinary(g.worker().worker_id())});
  for (auto [req, says] : {std::pair{placed(2, 99, -1), "placement group 99 does not exist"},
                           std::pair{placed(3, *id, 4), "out of range"}}) {
    leases_->Request(*caller.conn, job_, req);
    rpc::Envelope e = caller.One();
    ASSERT_TRUE(e.has_lease_rejected()) << says;
    EXPECT_EQ(e.lease_rejected().kind(), rpc::ERROR_INFEASIBLE);
    EXPECT_NE(e.lease_rejected().message().find(says), std::string::npos)
        << e.lease_rejected().message();
  }
  Return(caller, g.lease_id());
  EXPECT_EQ(group.pools[0].available().Get("CPU"), 1000);
  EXPECT_EQ(Free("CPU"), 1000);
}

TEST_F(LeaseManagerTest, AWaitingRequestIsToldOnceAndGrantedLaterUnlessCancelledOrItsCallerLeft) {
  Peer caller(io_), leaving(io_);
  rpc::LeaseGrant all = Granted(caller, 1, {{"CPU", 2000}});
  leases_->Request(*caller.conn, job_, Req(2));
  leases_->Request(*leaving.conn, job_, Req(3));
  leases_->Request(*caller.conn, job_, Req(4));
  leases_->Schedule();
  auto queued = caller.Frames();  // once each, however many passes looked at them
  ASSERT_EQ(queued.size(), 2u);
  EXPECT_EQ(queued[0].lease_queued().request_id(), 2u);
  EXPECT_FALSE(queued[0].lease_queued().infeasible());
  EXPECT_EQ(queued[1].lease_queued().request_id(), 4u);
  leases_->Cancel(*caller.conn, 99);  // not one of its requests
  leases_->Cancel(*leaving.conn, 2);  // not this caller's
  EXPECT_EQ(leases_->pending().size(), 3u);
  leases_->Cancel(*caller.conn, 2);
  leaving.conn->Close(Status::OK());
  io_.poll();
  Return(caller, all.lease_id());
  rpc::Envelope e = caller.One();
  ASSERT_TRUE(e.has_lease_grant());
  EXPECT_EQ(e.lease_grant().request_id(), 4u);
  EXPECT_TRUE(leases_->pending().empty()) << "the closed caller's request went too";
  EXPECT_EQ(launcher_.launches.size(), 1u);
}

// Spillback: with another node in the view, a request this node should not serve is answered with
// the other node's daemon; one it should is served here as before.
TEST_F(LeaseManagerTest, SpillsToAnotherNodeByAffinityLabelsAndLoad) {
  Make(4, Shape({{"CPU", 2000}}));
  const std::string other(16, 'o');
  host_->view.nodes = {host_->view.self, NodeEntry(other, Shape({{"CPU", 8000}, {"big", 1000}}),
                                                   Shape({{"CPU", 8000}, {"big", 1000}}), 7001)};
  (*host_->view.nodes[1].mutable_labels())["zone"] = "b";
  host_->view.others = true;
  host_->view.version = 1;
  Peer caller(io_);

  auto spilled_to = [&](const rpc::Envelope& e) {
    EXPECT_TRUE(e.has_lease_spillback()) << e.DebugString();
    return e.lease_spillback().daemon();
  };
  // A resource only the other node has.
  leases_->Request(*caller.conn, job_, Req(1, {{"CPU", 1000}, {"big", 1000}}));
  rpc::Address d = spilled_to(caller.One());
  EXPECT_EQ(d.node_id(), other);
  EXPECT_EQ(d.node_address(), "10.0.0.1:7001");
  EXPECT_EQ(d.socket_path(), "daemon.sock");
  EXPECT_TRUE(launcher_.launches.empty()) << "nothing starts here for it";

  // A hard affinity to the other node, and a label only it has.
  rpc::RequestLease pinned = Req(2);
  pinned.mutable_placement()->set_node_id(other);
  leases_->Request(*caller.conn, job_, pinned);
  EXPECT_EQ(spilled_to(caller.One()).node_id(), other);
  rpc::RequestLease labelled = Req(3);
  (*labelled.mutable_placement()->mutable_label_selector())["zone"] = "b";
  leases_->Request(*caller.conn, job_, labelled);
  EXPECT_EQ(spilled_to(caller.One()).node_id(), other);

  // The default: the first CPU here (half used), the second to the emptier node (less used even
  // with the three requests sent there counted against it).
  leases_->Request(*caller.conn, job_, Req(4));
  EXPECT_EQ(launcher_.launches.size(), 1u) << "served here: a worker starts";
  EXPECT_TRUE(caller.Frames().empty());
  leases_->Request(*caller.conn, job_, Req(5));
  EXPECT_EQ(spilled_to(caller.One()).node_id(), other);
  EXPECT_EQ(leases_->spilled_total(), 4u);

  // Sent here by another node: served here even though this node is the busier one.
  rpc::RequestLease came = Req(6);
  came.set_spilled(true);
  leases_->Request(*caller.conn, job_, came);
  EXPECT_TRUE(caller.Frames().empty()) << "served here (a worker starts, or it waits)";
  EXPECT_EQ(leases_->spilled_total(), 4u);

  // A hard affinity to a node that is not in the cluster fails at once, with why.
  rpc::RequestLease gone = Req(7);
  gone.mutable_placement()->set_node_id(std::string(16, 'z'));
  leases_->Request(*caller.conn, job_, gone);
  rpc::Envelope r = caller.One();
  ASSERT_TRUE(r.has_lease_rejected());
  EXPECT_EQ(r.lease_rejected().kind(), rpc::ERROR_INFEASIBLE);
  EXPECT_NE(r.lease_rejected().message().find("not a live node"), std::string::npos);
  // A soft one runs where the default puts it.
  gone.set_request_id(8);
  gone.mutable_placement()->set_soft(true);
  gone.mutable_placement()->mutable_node_id()->assign(std::string(16, 'z'));
  leases_->Request(*caller.conn, job_, gone);
  for (const auto& f : caller.Frames()) EXPECT_FALSE(f.has_lease_rejected()) << f.DebugString();

  // Malformed affinities and selectors are refused.
  rpc::RequestLease bad = Req(9);
  bad.mutable_placement()->set_node_id("short");
  leases_->Request(*caller.conn, job_, bad);
  EXPECT_TRUE(caller.One().has_lease_rejected());
  rpc::RequestLease bad_label = Req(10);
  (*bad_label.mutable_placement()->mutable_label_selector())["zone"] = "in(a,";
  leases_->Request(*caller.conn, job_, bad_label);
  r = caller.One();
  ASSERT_TRUE(r.has_lease_rejected());
  EXPECT_NE(r.lease_rejected().message().find("in(a,"), std::string::npos);
}

TEST_F(LeaseManagerTest, AloneOrWithoutRoomAnywhereItServesAsBefore) {
  Make(4, Shape({{"CPU", 2000}}));
  Peer caller(io_);
  // This node alone: no policy runs, an affinity to itself is honoured.
  rpc::RequestLease self = Req(1);
  self.mutable_placement()->set_node_id(node_id_.Binary());
  leases_->Request(*caller.conn, job_, self);
  EXPECT_EQ(launcher_.launches.size(), 1u);
  // Another node with nothing free: the request waits here rather than there.
  const std::string other(16, 'o');
  host_->view.nodes = {host_->view.self,
                       NodeEntry(other, Shape({{"CPU", 2000}}), Shape({{"CPU", 0}}), 7001)};
  host_->view.others = true;
  host_->view.version = 1;
  for (uint64_t rid = 2; rid <= 4; ++rid) leases_->Request(*caller.conn, job_, Req(rid));
  for (const auto& f : caller.Frames()) EXPECT_FALSE(f.has_lease_spillback()) << f.DebugString();
}

TEST_F(LeaseManagerTest, SpreadTakesTheNodesInTurnAndCountsWhatItSent) {
  Make(8, Shape({{"CPU", 4000}}));
  std::vector<std::string> others = {std::string(16, 'a'), std::string(16, 'b')};
  host_->view.nodes = {host_->view.self};
  for (const auto& o : others)
    host_->view.nodes.push_back(NodeEntry(o, Shape({{"CPU", 1000}}), Shape({{"CPU", 1000}})));
  host_->view.others = true;
  host_->view.version = 1;
  Peer caller(io_);
  std::map<std::string, int> where;
  for (uint64_t rid = 1; rid <= 6; ++rid) {
    rpc::RequestLease r = Req(rid);
    r.mutable_placement()->set_strategy(rpc::STRATEGY_SPREAD);
    leases_->Request(*caller.conn, job_, r);
    auto frames = caller.Frames();
    where[frames.empty() ? "here" : frames[0].lease_spillback().daemon().node_id()]++;
  }
  // Each other node has one CPU: it gets one request until the view refreshes (what this node
  // sent there counts against it meanwhile); the rest stay here.
  EXPECT_EQ(where[others[0]], 1);
  EXPECT_EQ(where[others[1]], 1);
  EXPECT_EQ(where["here"], 4);
  // Those waiting here for the workers being started for them are not placed anew by the next
  // pass (the view refreshed: the other nodes have room again).
  host_->view.version = 2;
  leases_->Schedule();
  for (const auto& f : caller.Frames()) EXPECT_FALSE(f.has_lease_spillback()) << f.DebugString();
}

}  // namespace
}  // namespace prism

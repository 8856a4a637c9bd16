// Hostile input on the node daemon's socket: every bad frame is refused or answered with an
// error, and the daemon keeps serving.
#include <gtest/gtest.h>
#include <prism/prism.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "base/ids.h"
#include "base/process_info.h"
#include "node/node_daemon.h"
#include "node/session.h"
#include "object_store/store_client.h"
#include "rpc/blocking_client.h"
#include "rpc/connection.h"
#include "worker/result_writer.h"
#include "worker/task_runner.h"

extern char** environ;

namespace prism {
namespace {

int RunnerTriple(int x) { return 3 * x; }
PRISM_REMOTE(RunnerTriple);

using rpc::BlockingClient;
using rpc::Envelope;

class DaemonHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_ = NewClusterToken();
    session_ = NewSessionDir();
    int lifeline[2], ready[2];
    ASSERT_EQ(pipe2(lifeline, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, lifeline[0], 3);
    posix_spawn_file_actions_adddup2(&fa, ready[1], 4);
    std::vector<std::string> args = {PRISM_TOOL,   "start",
                                     "--head",     "--block",
                                     "--embedded", "--session-dir",
                                     session_,     "--lifeline-fd",
                                     "3",          "--ready-fd",
                                     "4",          "--num-cpus",
                                     "2",          "--hello-timeout-ms",
                                     "300"};
    std::vector<std::string> env = {"PRISM_CLUSTER_TOKEN=" + token_};
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&daemon_, PRISM_TOOL, &fa, nullptr, argv.data(), envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(lifeline[0]);
    close(ready[1]);
    lifeline_ = lifeline[1];
    socket_ = DaemonSocketPath(session_);
    // The daemon writes one byte once it accepts connections (the socket file alone appears
    // at bind, a moment before listen).
    char byte = 0;
    ASSERT_EQ(read(ready[0], &byte, 1), 1) << "the daemon did not come up";
    close(ready[0]);
    ASSERT_TRUE(std::filesystem::exists(socket_));
  }
  void TearDown() override {
    close(lifeline_);  // the daemon stops on EOF
    int status = 0;
    waitpid(daemon_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status)) << "the daemon crashed (status " << status << ")";
    EXPECT_FALSE(std::filesystem::exists(session_));
  }

  Envelope Hello(rpc::Role role) { return rpc::MakeHello(role, token_); }

  BlockingClient Client() {
    auto c = BlockingClient::ConnectAndHello(socket_, Hello(rpc::ROLE_CLIENT));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(*c);
  }

  // The daemon still answers a status request on a fresh connection.
  void ExpectServing() {
    BlockingClient c = Client();
    Envelope req;
    req.mutable_status_request()->set_request_id(77);
    ASSERT_TRUE(c.Send(req).ok());
    auto reply = c.Receive(5000);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_TRUE(reply->has_status_reply());
    EXPECT_EQ(reply->status_reply().request_id(), 77u);
  }

  // Registers as a driver with worker id `id` (its job's workers would never match: no build id).
  BlockingClient Driver(const WorkerId& id) {
    Envelope hello = Hello(rpc::ROLE_DRIVER);
    hello.mutable_hello()->set_worker_id(id.Binary());
    hello.mutable_hello()->set_build_id("hostile-test");
    auto c = BlockingClient::ConnectAndHello(socket_, hello);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(*c);
  }

  // Sends `msg` on `c` and returns the answer (an error if none comes within 5 s).
  static Result<Envelope> Ask(BlockingClient& c, const Envelope& msg) {
    PRISM_RETURN_IF_ERROR(c.Send(msg));
    return c.Receive(5000);
  }

  // Sends raw bytes on a new connection; returns the first reply (or the error of reading one).
  Result<Envelope> SendRaw(const std::string& bytes, int timeout_ms = 2000) {
    auto c = BlockingClient::Connect(socket_);
    if (!c.ok()) return c.status();
    (void)c->SendRaw(bytes);
    return c->Receive(timeout_ms);
  }

  std::string token_, session_, socket_;
  pid_t daemon_ = -1;
  int lifeline_ = -1;
};

TEST_F(DaemonHostileTest, GarbageBytesCloseOnlyThatConnection) {
  std::mt19937 rng(1);
  for (int i = 0; i < 50; ++i) {
    std::string junk(1 + rng() % 512, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    auto r = SendRaw(junk, 500);
    if (r.ok()) {
      EXPECT_TRUE(r->has_refused()) << "garbage must never be welcomed";
    }
  }
  ExpectServing();
}

TEST_F(DaemonHostileTest, SilentConnectionsAreClosed) {
  auto c = BlockingClient::Connect(socket_);
  ASSERT_TRUE(c.ok());
  auto r = c->Receive(10000);  // says nothing; the daemon hangs up after its Hello timeout
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  ExpectServing();
}

TEST_F(DaemonHostileTest, HugeLengthPrefixIsRejected) {
  auto r = SendRaw(std::string("\xff\xff\xff\xff", 4) + "abc");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << "the daemon closes the connection";
  ExpectServing();
}

TEST_F(DaemonHostileTest, TruncatedFramesAreHarmless) {
  std::string frame;
  rpc::AppendFrame(Hello(rpc::ROLE_CLIENT), &frame);
  for (size_t cut = 1; cut < frame.size(); cut += 3) {
    auto c = BlockingClient::Connect(socket_);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->SendRaw(frame.substr(0, cut)).ok());
    c->Close();  // hang up mid-frame
  }
  ExpectServing();
}

TEST_F(DaemonHostileTest, WrongVersionOrTokenIsRefusedWithAReason) {
  Envelope bad_version = Hello(rpc::ROLE_CLIENT);
  bad_version.mutable_hello()->set_protocol_version(rpc::kProtocolVersion + 1);
  auto r = BlockingClient::ConnectAndHello(socket_, bad_version);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("protocol version"), std::string::npos)
      << r.status().ToString();

  auto t =
      BlockingClient::ConnectAndHello(socket_, rpc::MakeHello(rpc::ROLE_CLIENT, "not-the-token"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("token"), std::string::npos) << t.status().ToString();

  Envelope many_args = Hello(rpc::ROLE_DRIVER);
  many_args.mutable_hello()->set_worker_id(RandomUniqueId().Binary());
  many_args.mutable_hello()->set_build_id(SelfBuildId());
  for (int i = 0; i < 300; ++i) many_args.mutable_hello()->add_worker_argv("x");
  auto m = BlockingClient::ConnectAndHello(socket_, many_args);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("worker_argv"), std::string::npos) << m.status().ToString();

  Envelope not_hello;
  not_hello.mutable_status_request()->set_request_id(1);
  std::string bytes;
  rpc::AppendFrame(not_hello, &bytes);
  auto n = SendRaw(bytes);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(n->has_refused());
  ExpectServing();
}

TEST_F(DaemonHostileTest, UnknownIdsGetErrors) {
  // A worker id the daemon never started.
  Envelope w = Hello(rpc::ROLE_WORKER);
  w.mutable_hello()->set_worker_id(RandomUniqueId().Binary());
  auto r = BlockingClient::ConnectAndHello(socket_, w);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no worker"), std::string::npos);

  BlockingClient c = Client();
  Envelope ret;
  ret.mutable_return_lease()->set_lease_id(123456);
  auto reply = Ask(c, ret);
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(reply->has_error());
  EXPECT_NE(reply->error().message().find("123456"), std::string::npos);

  // A client may not take leases; a push meant for workers is not for the daemon.
  Envelope lease;
  lease.mutable_request_lease()->set_request_id(5);
  reply = Ask(c, lease);
  ASSERT_TRUE(reply.ok());
  EXPECT_TRUE(reply->has_error());
  Envelope push;
  push.mutable_push_task()->set_lease_id(1);
  reply = Ask(c, push);
  ASSERT_TRUE(reply.ok());
  EXPECT_TRUE(reply->has_error());
  ExpectServing();
}

TEST_F(DaemonHostileTest, LeaseReturnedTwiceIsRejected) {
  Envelope hello = Hello(rpc::ROLE_DRIVER);
  hello.mutable_hello()->set_worker_id(RandomUniqueId().Binary());
  hello.mutable_hello()->set_build_id("hostile-test");  // workers of this job will not match
  auto c = BlockingClient::ConnectAndHello(socket_, hello);
  ASSERT_TRUE(c.ok()) << c.status().ToString();

  // Negative amounts are refused without a lease.
  Envelope bad;
  bad.mutable_request_lease()->set_request_id(1);
  auto* r = bad.mutable_request_lease()->add_resources();
  r->set_name("CPU");
  r->set_milli(-1000);
  auto reply = Ask(*c, bad);
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(reply->has_lease_rejected());

  // Return a lease that was never granted, twice: both are errors, the connection lives on.
  for (int i = 0; i < 2; ++i) {
    Envelope ret;
    ret.mutable_return_lease()->set_lease_id(1);
    reply = Ask(*c, ret);
    ASSERT_TRUE(reply.ok());
    EXPECT_TRUE(reply->has_error());
  }
  ExpectServing();
}

TEST_F(DaemonHostileTest, GrantedLeaseReturnedTwiceIsRejected) {
  // Register as a real driver: the daemon starts this test binary as the worker.
  Envelope hello = Hello(rpc::ROLE_DRIVER);
  hello.mutable_hello()->set_worker_id(RandomUniqueId().Binary());
  hello.mutable_hello()->set_build_id(SelfBuildId());
  auto c = BlockingClient::ConnectAndHello(socket_, hello);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Envelope req;
  req.mutable_request_lease()->set_request_id(11);
  auto* cpu = req.mutable_request_lease()->add_resources();
  cpu->set_name("CPU");
  cpu->set_milli(1000);
  ASSERT_TRUE(c->Send(req).ok());
  auto reply = c->Receive(30000);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_TRUE(reply->has_lease_grant()) << reply->DebugString();
  uint64_t lease = reply->lease_grant().lease_id();

  Envelope ret;
  ret.mutable_return_lease()->set_lease_id(lease);
  ASSERT_TRUE(c->Send(ret).ok());  // the first return is silent
  ASSERT_TRUE(c->Send(ret).ok());  // the second is an error
  reply = c->Receive(5000);
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(reply->has_error()) << reply->DebugString();
  EXPECT_NE(reply->error().message().find("returned twice"), std::string::npos);

  // The returned worker is idle again: the next request gets it at once.
  req.mutable_request_lease()->set_request_id(12);
  ASSERT_TRUE(c->Send(req).ok());
  reply = c->Receive(5000);
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(reply->has_lease_grant());
  EXPECT_EQ(reply->lease_grant().request_id(), 12u);
  ExpectServing();
}

TEST_F(DaemonHostileTest, DriversNeedAWorkerIdOfTheirOwn) {
  Envelope hello = Hello(rpc::ROLE_DRIVER);
  hello.mutable_hello()->set_build_id("hostile-test");
  auto none = BlockingClient::ConnectAndHello(socket_, hello);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("worker id"), std::string::npos)
      << none.status().ToString();
  const WorkerId id = RandomUniqueId();
  BlockingClient first = Driver(id);
  hello.mutable_hello()->set_worker_id(id.Binary());
  auto twice = BlockingClient::ConnectAndHello(socket_, hello);
  EXPECT_FALSE(twice.ok()) << "a second driver may not take an id in use";
  ExpectServing();
}

// A store client by hand: the handshake hands over the arena's descriptor.
TEST_F(DaemonHostileTest, StoreHandshakeHandsOverTheArena) {
  Envelope hello = Hello(rpc::ROLE_CLIENT);
  hello.mutable_hello()->set_want_store(true);
  rpc::Welcome welcome;
  auto c = BlockingClient::ConnectAndHello(socket_, hello, &welcome);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  int fd = c->TakeReceivedFd();
  ASSERT_GE(fd, 0) << "no descriptor came with the Welcome";
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_size), welcome.store_capacity());
  EXPECT_GT(welcome.store_capacity(), 0u);
  close(fd);
}

TEST_F(DaemonHostileTest, BadStoreRequestsGetErrors) {
  const WorkerId self = RandomUniqueId();
  BlockingClient driver = Driver(self);  // objects need a live owner
  const ObjectId id = PutObjectId(DriverTaskId(JobIdFromInt(9)), 1);
  // Without want_store, store requests are refused (and the connection stays usable).
  {
    BlockingClient plain = Client();
    Envelope req;
    req.mutable_store_get()->set_request_id(1);
    req.mutable_store_get()->add_object_ids(id.Binary());
    auto r = Ask(plain, req);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->has_error()) << r->DebugString();
  }
  Envelope hello = Hello(rpc::ROLE_CLIENT);
  hello.mutable_hello()->set_want_store(true);
  auto c = BlockingClient::ConnectAndHello(socket_, hello);
  ASSERT_TRUE(c.ok());
  close(c->TakeReceivedFd());
  auto expect_error = [&](const Envelope& req, StatusCode code, const char* what) {
    auto r = Ask(*c, req);
    ASSERT_TRUE(r.ok()) << what << ": " << r.status().ToString();
    ASSERT_TRUE(r->has_error()) << what << ": " << r->DebugString();
    EXPECT_EQ(r->error().code(), static_cast<uint32_t>(code))
        << what << ": " << r->error().message();
  };
  Envelope req;
  // Bad ids.
  req.mutable_store_create()->set_request_id(2);
  req.mutable_store_create()->set_object_id("short");
  req.mutable_store_create()->set_size(10);
  req.mutable_store_create()->set_owner_worker_id(self.Binary());
  expect_error(req, StatusCode::kInvalidArgument, "a short object id");
  req.mutable_store_create()->set_object_id(id.Binary());
  req.mutable_store_create()->set_owner_worker_id("x");
  expect_error(req, StatusCode::kInvalidArgument, "a bad owner id");
  req.mutable_store_create()->set_owner_worker_id(RandomUniqueId().Binary());
  expect_error(req, StatusCode::kNotFound, "an owner that is no live process of the node");
  req.mutable_store_create()->set_owner_worker_id(self.Binary());
  req.mutable_store_create()->set_size(uint64_t{1} << 60);
  expect_error(req, StatusCode::kOutOfMemory, "an object larger than the store");
  req.mutable_store_create()->set_size(0);
  expect_error(req, StatusCode::kInvalidArgument, "an empty object");
  // A real object: create, seal; then writes after the seal and double releases.
  req.mutable_store_create()->set_size(100);
  auto created = Ask(*c, req);
  ASSERT_TRUE(created.ok() && created->has_store_reply()) << created->DebugString();
  Envelope seal;
  seal.mutable_store_seal()->set_request_id(3);
  seal.mutable_store_seal()->set_object_id(id.Binary());
  auto sealed = Ask(*c, seal);
  ASSERT_TRUE(sealed.ok() && sealed->has_store_reply());
  expect_error(seal, StatusCode::kInvalidArgument, "sealing twice");
  expect_error(req, StatusCode::kAlreadyExists, "creating (writing) a sealed object again");
  Envelope abort;
  abort.mutable_store_abort()->set_request_id(4);
  abort.mutable_store_abort()->set_object_id(id.Binary());
  expect_error(abort, StatusCode::kInvalidArgument, "aborting a sealed object");
  Envelope release;
  release.mutable_store_release()->set_request_id(5);
  release.mutable_store_release()->add_object_ids(id.Binary());
  ASSERT_TRUE(c->Send(release).ok());  // the creator's pin: fine, answered only on error
  expect_error(release, StatusCode::kNotFound, "releasing twice");
  release.mutable_store_release()->set_object_ids(0, "garbage");
  expect_error(release, StatusCode::kInvalidArgument, "releasing a bad id");
  // Get answers per object.
  Envelope get;
  get.mutable_store_get()->set_request_id(6);
  get.mutable_store_get()->add_object_ids(id.Binary());
  get.mutable_store_get()->add_object_ids("bad");
  get.mutable_store_get()->add_object_ids(PutObjectId(DriverTaskId(JobIdFromInt(9)), 2).Binary());
  auto got = Ask(*c, get);
  ASSERT_TRUE(got.ok() && got->has_store_reply()) << got->DebugString();
  ASSERT_EQ(got->store_reply().objects_size(), 3);
  EXPECT_EQ(got->store_reply().objects(0).code(), 0u);
  EXPECT_EQ(got->store_reply().objects(0).size(), 100u);
  EXPECT_EQ(got->store_reply().objects(1).code(),
            static_cast<uint32_t>(StatusCode::kInvalidArgument));
  EXPECT_EQ(got->store_reply().objects(2).code(), static_cast<uint32_t>(StatusCode::kNotFound));
  // Delete is idempotent; unknown ids are ignored.
  Envelope del;
  del.mutable_store_delete()->set_request_id(7);
  del.mutable_store_delete()->add_object_ids(id.Binary());
  del.mutable_store_delete()->add_object_ids(id.Binary());
  ASSERT_TRUE(c->Send(del).ok());
  // The pin from Get keeps it until this client goes; then it is freed.
  c->Close();
  ExpectServing();
  BlockingClient s = Client();
  Envelope st;
  st.mutable_status_request()->set_request_id(8);
  for (int i = 0; i < 100; ++i) {
    auto r = Ask(s, st);
    ASSERT_TRUE(r.ok() && r->has_status_reply());
    if (r->status_reply().store().num_objects() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto r = Ask(s, st);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status_reply().store().num_objects(), 0u);
  EXPECT_EQ(r->status_reply().store().used(), 0u);
}

// A reader's pin stays for the client's hold after its last release (a second get is a lookup),
// then goes back to the daemon: each time, including after the sweeper found nothing idle and
// went to sleep, and while gets and releases come back to back.
TEST_F(DaemonHostileTest, AStoreClientGivesBackIdlePinsAfterItsHold) {
  const WorkerId owner = RandomUniqueId();
  BlockingClient driver = Driver(owner);
  auto store = StoreClient::Connect(socket_, token_, owner, std::chrono::milliseconds(200));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StoreClient& s = **store;
  const ObjectId id = PutObjectId(DriverTaskId(JobIdFromInt(9)), 1);
  ASSERT_TRUE(s.Create(id, 64, owner).ok());
  ASSERT_TRUE(s.Seal(id).ok());
  s.Release(id);  // the writer's pin
  auto given_back = [&] {
    for (int i = 0; i < 200; ++i) {
      if (s.held() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 1000; ++i) {
      auto views = s.Get({id});
      ASSERT_TRUE(views[0].status.ok()) << views[0].status.ToString();
      s.Release(id);
    }
    EXPECT_EQ(s.held(), 1u) << "kept for the hold";
    EXPECT_TRUE(given_back()) << "round " << round;
  }
}

// A client that dies half way through writing an object leaves nothing behind.
TEST_F(DaemonHostileTest, StoreClientDyingMidWriteLeavesNothing) {
  const WorkerId owner = RandomUniqueId();
  BlockingClient driver = Driver(owner);
  Envelope hello = Hello(rpc::ROLE_CLIENT);
  hello.mutable_hello()->set_want_store(true);
  {
    auto c = BlockingClient::ConnectAndHello(socket_, hello);
    ASSERT_TRUE(c.ok());
    close(c->TakeReceivedFd());
    Envelope req;
    req.mutable_store_create()->set_request_id(1);
    req.mutable_store_create()->set_object_id(
        PutObjectId(DriverTaskId(JobIdFromInt(9)), 1).Binary());
    req.mutable_store_create()->set_size(1 << 20);
    req.mutable_store_create()->set_owner_worker_id(owner.Binary());
    auto r = Ask(*c, req);
    ASSERT_TRUE(r.ok() && r->has_store_reply());
    // A truncated frame, then the connection drops.
    std::string frame;
    rpc::AppendFrame(req, &frame);
    (void)c->SendRaw(frame.substr(0, frame.size() / 2));
  }
  BlockingClient s = Client();
  Envelope st;
  st.mutable_status_request()->set_request_id(2);
  uint64_t used = 1;
  for (int i = 0; i < 100 && used != 0; ++i) {
    auto r = Ask(s, st);
    ASSERT_TRUE(r.ok() && r->has_status_reply());
    used = r->status_reply().store().used();
    if (used != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(used, 0u);
}

TEST_F(DaemonHostileTest, ThousandsOfMutatedFrames) {
  std::mt19937 rng(42);
  std::vector<Envelope> seeds(9);
  seeds[0] = Hello(rpc::ROLE_CLIENT);
  seeds[1].mutable_status_request()->set_request_id(3);
  seeds[2].mutable_return_lease()->set_lease_id(9);
  seeds[3].mutable_request_lease()->set_request_id(4);
  seeds[3].mutable_request_lease()->add_resources()->set_name("CPU");
  seeds[4].mutable_push_task()->mutable_spec()->set_function("Square");
  seeds[5] = Hello(rpc::ROLE_WORKER);
  seeds[6] = Hello(rpc::ROLE_CLIENT);
  seeds[6].mutable_hello()->set_want_store(true);
  seeds[7].mutable_store_create()->set_object_id(std::string(20, 'o'));
  seeds[7].mutable_store_create()->set_size(4096);
  seeds[7].mutable_store_create()->set_owner_worker_id(std::string(16, 'w'));
  seeds[8].mutable_store_get()->add_object_ids(std::string(20, 'o'));
  int frames = 0;
  for (int conn = 0; conn < 150; ++conn) {
    auto c = BlockingClient::Connect(socket_);
    ASSERT_TRUE(c.ok());
    std::string wire;
    if (rng() % 2 == 0)
      rpc::AppendFrame(seeds[rng() % 2 == 0 ? 0 : 6], &wire);  // half get past Hello
    for (int i = 0; i < 20; ++i, ++frames) {
      std::string frame;
      rpc::AppendFrame(seeds[rng() % seeds.size()], &frame);
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) frame[rng() % frame.size()] = static_cast<char>(rng());
      if (rng() % 8 == 0) frame.resize(rng() % frame.size());  // truncated
      wire += frame;
    }
    (void)c->SendRaw(wire);
    (void)c->Receive(20);
  }
  EXPECT_EQ(frames, 3000);
  ExpectServing();
  EXPECT_EQ(kill(daemon_, 0), 0) << "the daemon must still be running";
}

}  // namespace
}  // namespace prism

// The core workers' own sockets (the driver's and each worker's) get the same treatment.
namespace prism {
namespace {

int Twice(int x) { return 2 * x; }
PRISM_REMOTE(Twice);

TEST(CoreWorkerHostileTest, DriverAndWorkerSocketsRejectBadPeers) {
  prism::Init({.num_cpus = 1});
  ASSERT_EQ(prism::Get(prism::Task(Twice).Remote(4)), 8);  // a worker exists now
  std::vector<std::string> sockets;
  std::string prefix = "s-" + std::to_string(getpid()) + "-";
  for (const auto& s : std::filesystem::directory_iterator(SessionRoot())) {
    if (s.path().filename().string().rfind(prefix, 0) != 0) continue;
    for (const auto& f : std::filesystem::directory_iterator(s.path())) {
      std::string name = f.path().filename();
      if (name.rfind("d-", 0) == 0 || name.rfind("w-", 0) == 0) sockets.push_back(f.path());
    }
  }
  ASSERT_GE(sockets.size(), 2u) << "expected the driver's and a worker's socket";
  std::mt19937 rng(7);
  for (const auto& path : sockets) {
    SCOPED_TRACE(path);
    // Garbage and a 4 GiB length prefix: the connection is dropped.
    for (int i = 0; i < 20; ++i) {
      auto c = BlockingClient::Connect(path);
      ASSERT_TRUE(c.ok());
      std::string junk(1 + rng() % 256, '\0');
      for (char& ch : junk) ch = static_cast<char>(rng());
      if (i == 0) junk = std::string("\xff\xff\xff\xff", 4);
      (void)c->SendRaw(junk);
      auto r = c->Receive(300);
      if (r.ok()) {
        EXPECT_TRUE(r->has_refused());
      }
    }
    // A wrong token, and a caller that expects another worker, are refused with a reason.
    auto t = BlockingClient::ConnectAndHello(path, rpc::MakeHello(rpc::ROLE_CLIENT, "bad"));
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("token"), std::string::npos);
    // Work before Hello is refused.
    Envelope early;
    early.mutable_get_object()->set_object_id("nope");
    auto c = BlockingClient::Connect(path);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->Send(early).ok());
    auto r = c->Receive(2000);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->has_refused());
  }
  prism::Shutdown();
  prism::Init({.num_cpus = 1});
  EXPECT_EQ(prism::Get(prism::Task(Twice).Remote(21)), 42);
  prism::Shutdown();
}

// A worker's parts around the daemon's real store, for the units that run tasks and write their
// results. `self` must be a registered driver or worker of the daemon.
struct WorkerParts {
  WorkerParts(const std::string& socket, const std::string& token, const WorkerId& self)
      : address{"/tmp/prism-parts-test.sock", self.Binary(), std::string(16, 'n')} {
    auto connected = StoreClient::Connect(socket, token, self, std::chrono::milliseconds(200));
    if (!connected.ok()) throw std::runtime_error("store: " + connected.status().ToString());
    host = std::shared_ptr<StoreClient>(std::move(*connected));
    loop.Start("test-loop");
    OwnerClients::Config config;
    config.self = self;
    owners = std::make_unique<OwnerClients>(loop.context(), config, [](const ObjectId&) {});
    objects = std::make_unique<ObjectAccess>(
        ObjectAccess::Self{address, 777}, store, host, *owners, context, loop.context(),
        [] { return false; }, [](bool) {});
    results = std::make_unique<ResultWriter>(*objects, *host, store, *owners);
  }
  ~WorkerParts() {
    std::promise<void> closed;
    asio::post(loop.context(), [&] {
      owners->CloseAll();
      closed.set_value();
    });
    closed.get_future().wait();
    loop.Stop();
  }

  rpc::EventLoop loop;
  internal::OwnerAddress address;
  std::shared_ptr<StoreClient> host;
  MemoryStore store;
  const TaskId root = DriverTaskId(JobIdFromInt(9));
  TaskContext context{root};
  std::unique_ptr<OwnerClients> owners;
  std::unique_ptr<ObjectAccess> objects;
  std::unique_ptr<ResultWriter> results;
};

// ResultWriter against the daemon's real store: small results inline, large ones in the store
// (owned by the caller), refs inside lent to the caller, and nothing left behind by a failure.
TEST_F(DaemonHostileTest,
       AResultWriterStoresLargeResultsForTheCallerAndLeavesNothingAfterAFailure) {
  const WorkerId self = RandomUniqueId(), caller = RandomUniqueId();
  BlockingClient driver = Driver(self);
  BlockingClient caller_process =
      Driver(caller);  // a result's owner must be a live process of the node
  WorkerParts parts(socket_, token_, self);
  StoreClient* host = parts.host.get();
  MemoryStore& store = parts.store;
  ObjectAccess& objects = *parts.objects;
  ResultWriter& results = *parts.results;
  const TaskId root = parts.root;

  auto encoded = [](std::string bytes) {
    auto owned = std::make_shared<std::string>(std::move(bytes));
    internal::EncodedValue v;
    v.size = owned->size();
    v.write = [owned](char* dst) { std::copy(owned->begin(), owned->end(), dst); };
    v.keep = owned;
    return v;
  };
  const TaskId task = ChildTaskId(root, 1);
  rpc::TaskSpec spec;
  spec.set_task_id(task.Binary());
  spec.set_name("t");
  spec.set_num_returns(2);
  spec.mutable_caller()->set_worker_id(caller.Binary());
  const std::string large(internal::kMaxInlineBytes + 1000, 'x');
  ReturnValues out;
  out.push_back(encoded("small"));
  out.push_back(encoded(large));
  // The small one carries a ref this process owns: lent to the caller, counted here.
  internal::RefPtr mine = objects.Put(encoded("kept"));
  out[0].nested.push_back(mine);
  rpc::TaskReply reply;
  results.StoreAll(spec, out, reply);
  ASSERT_EQ(reply.returns_size(), 2);
  EXPECT_EQ(reply.returns(0).data(), "small");
  ASSERT_EQ(reply.returns(0).nested_size(), 1);
  EXPECT_TRUE(reply.returns(0).nested(0).borrow_registered());
  EXPECT_EQ(store.NumBorrowers(mine->id()), 1u);
  EXPECT_TRUE(reply.returns(1).in_store());
  EXPECT_EQ(reply.returns(1).size(), large.size());
  const ObjectId second = ReturnObjectId(task, 2);
  auto views = host->Get({second});
  ASSERT_TRUE(views[0].status.ok()) << views[0].status.ToString();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(views[0].data), views[0].size), large);
  host->Release(second);

  // A task that returned the wrong number of values: refused, nothing written.
  rpc::TaskReply wrong;
  ReturnValues one;
  one.push_back(encoded(large));
  EXPECT_THROW(results.StoreAll(spec, one, wrong), StoreWriteError);
  EXPECT_EQ(wrong.returns_size(), 0);

  // A reply given up on after its results were written: they go from the store.
  results.DropStored(reply);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    auto again = host->Get({second});
    gone = !again[0].status.ok();
    if (!gone) {
      host->Release(second);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  EXPECT_TRUE(gone);
}

// TaskRunner against the daemon's real store: a registered function runs on inline and stored
// arguments, and every way a pushed task can be wrong comes back as the matching error.
TEST_F(DaemonHostileTest, ATaskRunnerRunsTasksAndAnswersBadOnesWithErrors) {
  const WorkerId self = RandomUniqueId(), caller = RandomUniqueId();
  BlockingClient driver = Driver(self);
  BlockingClient caller_process = Driver(caller);
  WorkerParts parts(socket_, token_, self);
  std::shared_ptr<StoreClient> host = parts.host;
  const TaskId root = parts.root;
  GpuTasks gpu;
  TaskRunner runner(TaskRunner::Parts{parts.address, *parts.objects, *parts.results, *parts.owners,
                                      gpu, host, nullptr});

  const std::string* name =
      internal::FunctionRegistry::Instance().NameOf(reinterpret_cast<const void*>(&RunnerTriple));
  ASSERT_NE(name, nullptr);
  int next = 0;
  auto push = [&](const std::string& function) {
    auto p = std::make_shared<rpc::PushTask>();
    rpc::TaskSpec& spec = *p->mutable_spec();
    spec.set_task_id(ChildTaskId(root, static_cast<uint64_t>(++next)).Binary());
    spec.set_function(function);
    spec.set_name(function);
    spec.set_num_returns(1);
    spec.mutable_caller()->set_worker_id(caller.Binary());
    return p;
  };
  auto run = [&](const std::shared_ptr<rpc::PushTask>& p) {
    return runner.Execute(p, nullptr).reply;
  };

  // An inline argument.
  auto p1 = push(*name);
  p1->mutable_spec()->add_args()->set_value(internal::Pack(14));
  rpc::TaskReply r1 = run(p1);
  ASSERT_EQ(r1.error().kind(), rpc::ERROR_NONE) << r1.error().message();
  EXPECT_EQ(internal::Unpack<int>(r1.returns(0).data()), 42);

  // An argument in the node's store.
  const ObjectId arg = PutObjectId(root, 1);
  const std::string packed = internal::Pack(5);
  auto made = host->Create(arg, packed.size(), self);
  ASSERT_TRUE(made.ok());
  std::memcpy(*made, packed.data(), packed.size());
  ASSERT_TRUE(host->Seal(arg).ok());
  host->Release(arg);
  auto p2 = push(*name);
  p2->mutable_spec()->add_args()->set_store_object(arg.Binary());
  rpc::TaskReply r2 = run(p2);
  ASSERT_EQ(r2.error().kind(), rpc::ERROR_NONE) << r2.error().message();
  EXPECT_EQ(internal::Unpack<int>(r2.returns(0).data()), 15);

  // What cannot run.
  rpc::TaskReply unknown = run(push("no_such_function"));
  EXPECT_EQ(unknown.error().kind(), rpc::ERROR_FUNCTION_NOT_FOUND);
  EXPECT_NE(unknown.error().message().find("PRISM_REMOTE"), std::string::npos);
  auto p3 = push(*name);
  p3->mutable_spec()->add_args();  // neither a value nor a stored object
  EXPECT_EQ(run(p3).error().kind(), rpc::ERROR_SYSTEM);
  auto p4 = push(*name);
  p4->mutable_spec()->add_args()->set_store_object(
      PutObjectId(root, 99).Binary());  // not in the store
  EXPECT_EQ(run(p4).error().kind(), rpc::ERROR_OBJECT_LOST);
  auto p5 = push(*name);
  p5->mutable_spec()->add_args()->set_value(internal::Pack(std::string("a string, not an int")));
  EXPECT_EQ(run(p5).error().kind(), rpc::ERROR_ARGUMENT);
  auto p6 = push(*name);
  p6->mutable_spec()->set_streaming(true);
  EXPECT_EQ(run(p6).error().kind(), rpc::ERROR_ARGUMENT);  // not a streaming function
  auto p7 = push(*name);
  p7->mutable_spec()->set_actor_id(std::string(TaskId::kSize, 'a'));
  p7->mutable_spec()->set_function("NoSuchClass::Method");
  rpc::TaskReply r7 = run(p7);
  EXPECT_EQ(r7.error().kind(), rpc::ERROR_FUNCTION_NOT_FOUND);
  EXPECT_TRUE(runner.actor_id().IsNil());  // no creation ran: this process hosts no actor
}

}  // namespace
}  // namespace prism

// DaemonControlClient against a fake control service on the other end of a socket pair: what
// it sends, how it reads the answers, refusals, silence and a lost connection.
#include "worker/control_client.h"

#include <gtest/gtest.h>
#include <prism/errors.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "rpc/connection.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

// Answers like the node daemon's control state, from a few fixed cases: group 7 exists and is
// created, group 8 stays pending, group 9 is unknown; actor "svc" exists, others do not; a
// group named "too-big" is infeasible and one named "silent" never gets an answer.
class FakeControlService {
 public:
  void OnMessage(rpc::Connection& c, rpc::Envelope& m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      received_.push_back(m);
    }
    rpc::Envelope out;
    auto refuse = [&](uint64_t rid, StatusCode code, const std::string& why) {
      out.mutable_error()->set_request_id(rid);
      out.mutable_error()->set_code(static_cast<uint32_t>(code));
      out.mutable_error()->set_message(why);
    };
    if (m.has_kv_request()) {
      const auto& r = m.kv_request();
      auto* a = out.mutable_kv_reply();
      a->set_request_id(r.request_id());
      std::string k = r.ns() + "/" + r.key();
      auto it = kv_.find(k);
      a->set_found(it != kv_.end());
      if (r.op() == rpc::KvRequest::PUT && (it == kv_.end() || r.overwrite())) kv_[k] = r.value();
      if (r.op() == rpc::KvRequest::GET && it != kv_.end()) a->set_value(it->second);
      if (r.op() == rpc::KvRequest::DELETE && it != kv_.end()) kv_.erase(it);
    } else if (m.has_create_placement_group()) {
      const auto& r = m.create_placement_group();
      if (r.name() == "silent") return;
      if (r.name() == "too-big") {
        refuse(r.request_id(), StatusCode::kInfeasible, "no node has that many GPUs");
      } else {
        auto* g = out.mutable_placement_group_info();
        g->set_request_id(r.request_id());
        g->set_id(7);
        g->set_name(r.name());
        g->set_strategy(r.strategy());
        *g->mutable_bundles() = r.bundles();
      }
    } else if (m.has_placement_group_request()) {
      const auto& r = m.placement_group_request();
      if (r.id() == 9 || r.op() == rpc::PlacementGroupRequest::GET_BY_NAME) {
        refuse(r.request_id(), StatusCode::kInvalidArgument, "no such placement group");
      } else {
        out.mutable_placement_group_info()->set_request_id(r.request_id());
        out.mutable_placement_group_info()->set_id(r.id());
        out.mutable_placement_group_info()->set_state(r.id() == 7 ? rpc::PG_CREATED
                                                                  : rpc::PG_PENDING);
      }
    } else if (m.has_get_actor_by_name()) {
      const auto& r = m.get_actor_by_name();
      if (r.name() != "svc") {
        refuse(r.request_id(), StatusCode::kNotFound, "no actor named " + r.name());
      } else {
        out.mutable_actor_update()->set_request_id(r.request_id());
        out.mutable_actor_update()->set_actor_id(std::string(16, 'a'));
        out.mutable_actor_update()->set_state(rpc::ACTOR_ALIVE);
      }
    } else if (m.has_create_actor()) {
      out.mutable_actor_update()->set_request_id(m.create_actor().request_id());
      out.mutable_actor_update()->set_actor_id(m.create_actor().spec().task_id());
      out.mutable_actor_update()->set_state(rpc::ACTOR_PENDING);
    } else if (m.has_request_lease()) {  // the node is busy: the request waits
      out.mutable_lease_queued()->set_request_id(m.request_lease().request_id());
    } else if (m.has_kill_actor()) {
      if (m.kill_actor().request_id() == 0) return;  // an actor's own exit: no answer
      out.mutable_actor_update()->set_request_id(m.kill_actor().request_id());
      out.mutable_actor_update()->set_actor_id(m.kill_actor().actor_id());
      out.mutable_actor_update()->set_state(rpc::ACTOR_DEAD);
    } else {
      return;
    }
    c.Send(out);
  }
  std::vector<rpc::Envelope> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  std::mutex mu_;
  std::vector<rpc::Envelope> received_;
  std::map<std::string, std::string> kv_;  // (the loop's only)
};

class ControlClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    asio::local::stream_protocol::socket a(loop_.context()), b(loop_.context());
    asio::local::connect_pair(a, b);
    service_conn_ = rpc::Connection::Create(std::move(b));
    service_conn_->Start([this](rpc::Connection& c, rpc::Envelope& m) { service_.OnMessage(c, m); },
                         [](rpc::Connection&, const Status&) {});
    daemon_ =
        std::make_unique<DaemonClient>(rpc::Connection::Create(std::move(a)), [](const Status&) {});
    daemon_->Start();
    loop_.Start("test-loop");
    client_ = std::make_unique<DaemonControlClient>(
        *daemon_, [this](bool b) { blocked_.push_back(b); }, 500ms);
  }
  void TearDown() override {
    client_.reset();
    daemon_->Close();
    service_conn_->Close(Status::OK());
    loop_.Stop();
  }

  rpc::EventLoop loop_;
  FakeControlService service_;
  std::shared_ptr<rpc::Connection> service_conn_;
  std::unique_ptr<DaemonClient> daemon_;
  std::unique_ptr<DaemonControlClient> client_;
  std::vector<bool> blocked_;  // (the test thread's only: Wait calls it there)
};

TEST_F(ControlClientTest, KeyValueTable) {
  EXPECT_FALSE(client_->KvPut("ns", "k", "v1", /*overwrite=*/false));  // new
  EXPECT_TRUE(client_->KvPut("ns", "k", "v2", /*overwrite=*/false));   // existed: kept
  EXPECT_EQ(client_->KvGet("ns", "k"), "v1");
  EXPECT_TRUE(client_->KvPut("ns", "k", "v3", /*overwrite=*/true));
  EXPECT_EQ(client_->KvGet("ns", "k"), "v3");
  EXPECT_EQ(client_->KvGet("other", "k"), std::nullopt);
  EXPECT_TRUE(client_->KvDelete("ns", "k"));
  EXPECT_FALSE(client_->KvDelete("ns", "k"));
  EXPECT_EQ(client_->KvGet("ns", "k"), std::nullopt);
}

TEST_F(ControlClientTest, PlacementGroupsAreSentAsAskedAndWaitedForBlocked) {
  PlacementGroupOptions o;
  o.bundles = {{{"CPU", 1.5}}, {{"GPU", 1}, {"CPU", 2}}};
  o.strategy = PlacementStrategy::kStrictSpread;
  o.name = "pair";
  PlacementGroup g = client_->CreatePlacementGroup(o);
  EXPECT_EQ(g.id(), 7u);
  EXPECT_EQ(g.name(), "pair");
  EXPECT_EQ(g.strategy(), PlacementStrategy::kStrictSpread);
  ASSERT_EQ(g.bundles().size(), 2u);
  EXPECT_DOUBLE_EQ(g.bundles()[0].at("CPU"), 1.5);
  EXPECT_DOUBLE_EQ(g.bundles()[1].at("GPU"), 1.0);
  const rpc::CreatePlacementGroup sent = service_.received().back().create_placement_group();
  EXPECT_EQ(sent.strategy(), rpc::PLACEMENT_STRICT_SPREAD);
  ASSERT_EQ(sent.bundles_size(), 2);
  EXPECT_EQ(sent.bundles(0).resources(0).milli(), 1500);

  EXPECT_TRUE(client_->WaitPlacementGroup(7, 1s));
  EXPECT_FALSE(client_->WaitPlacementGroup(8, 1s));  // still pending when the service answers
  EXPECT_EQ(blocked_, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(service_.received().back().placement_group_request().timeout_ms(), 1000u);
}

TEST_F(ControlClientTest, BadGroupsAreRefusedBeforeAnythingIsSent) {
  PlacementGroupOptions none;
  EXPECT_THROW(client_->CreatePlacementGroup(none), InvalidArgumentError);
  PlacementGroupOptions empty_bundle;
  empty_bundle.bundles = {{{"CPU", 1}}, {}};
  EXPECT_THROW(client_->CreatePlacementGroup(empty_bundle), InvalidArgumentError);
  PlacementGroupOptions negative;
  negative.bundles = {{{"CPU", -1}}};
  EXPECT_THROW(client_->CreatePlacementGroup(negative), InvalidArgumentError);
  EXPECT_TRUE(service_.received().empty());
}

TEST_F(ControlClientTest, RefusalsBecomeTheMatchingErrors) {
  PlacementGroupOptions big;
  big.bundles = {{{"GPU", 64}}};
  big.name = "too-big";
  EXPECT_THROW(client_->CreatePlacementGroup(big), InfeasibleError);
  try {
    client_->RemovePlacementGroup(9);
    FAIL() << "an unknown group was removed";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("no such placement group"), std::string::npos);
  }
  EXPECT_THROW(client_->GetPlacementGroup("nobody"), InvalidArgumentError);
  EXPECT_THROW(client_->LookupActor("nobody", ""), InvalidArgumentError);
  // The client is none the worse for them.
  EXPECT_EQ(client_->LookupActor("svc", "").state(), rpc::ACTOR_ALIVE);
}

TEST_F(ControlClientTest, TheActorDirectory) {
  rpc::CreateActor create;
  create.mutable_spec()->set_task_id(std::string(16, 'b'));
  rpc::ActorUpdate registered = client_->RegisterActor(create);
  EXPECT_EQ(registered.actor_id(), std::string(16, 'b'));
  EXPECT_NE(service_.received().back().create_actor().request_id(), 0u);  // the client set it

  ActorId id = ActorId::FromBinary(std::string(16, 'b'));
  EXPECT_EQ(client_->KillActor(id, /*no_restart=*/true, "done with it").state(), rpc::ACTOR_DEAD);
  EXPECT_TRUE(service_.received().back().kill_actor().no_restart());
  EXPECT_EQ(service_.received().back().kill_actor().reason(), "done with it");

  client_->AnnounceExit(id, "exit_actor()");  // not answered, not waited for
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (service_.received().back().kill_actor().reason() != "exit_actor()" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(service_.received().back().kill_actor().request_id(), 0u);
  EXPECT_TRUE(service_.received().back().kill_actor().no_restart());
}

TEST_F(ControlClientTest, SilenceAndALostServiceAreRuntimeErrors) {
  PlacementGroupOptions o;
  o.bundles = {{{"CPU", 1}}};
  o.name = "silent";
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(client_->CreatePlacementGroup(o), RuntimeError);  // after answer_within (500 ms)
  EXPECT_GE(std::chrono::steady_clock::now() - start, 400ms);

  service_conn_->Close(Status::OK());
  EXPECT_THROW(client_->KvGet("ns", "k"), RuntimeError);
}

TEST_F(ControlClientTest, CallsFromManyThreadsEachGetTheirOwnAnswer) {
  // Callers add their calls from their own threads while the loop takes answered ones out.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::string key = std::to_string(t) + "/" + std::to_string(i);
        if (client_->KvPut("ns", key, "v" + key, /*overwrite=*/false)) wrong++;
        if (client_->KvGet("ns", key) != "v" + key) wrong++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(ControlClientTest, CallsWaitingWhenTheServiceGoesAndCallsAfterFailAtOnce) {
  PlacementGroupOptions o;
  o.bundles = {{{"CPU", 1}}};
  o.name = "silent";
  std::atomic<bool> threw{false};
  std::chrono::steady_clock::duration waited{};
  std::thread caller([&] {
    auto start = std::chrono::steady_clock::now();
    try {
      client_->CreatePlacementGroup(o);
    } catch (const RuntimeError&) {
      threw = true;
    }
    waited = std::chrono::steady_clock::now() - start;
  });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (service_.received().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  ASSERT_FALSE(service_.received().empty());
  service_conn_->Close(Status::OK());  // the daemon goes before it answers
  caller.join();
  EXPECT_TRUE(threw);
  EXPECT_LT(waited, 400ms);  // failed by the loss, not by answer_within (500 ms)

  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(client_->KvGet("ns", "k"), RuntimeError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 400ms);
}

// The submitter withdraws a lease request once nothing waits for it, which may happen within
// that request's own `queued` callback (a task finished meanwhile): the callback must outlive
// the withdrawal it makes.
TEST_F(ControlClientTest, ALeaseRequestWithdrawnFromItsOwnQueuedCallback) {
  struct Token {
    explicit Token(std::shared_ptr<std::atomic<bool>> f) : gone(std::move(f)) {}
    ~Token() { *gone = true; }
    std::shared_ptr<std::atomic<bool>> gone;
  };
  auto gone = std::make_shared<std::atomic<bool>>(false);
  auto alive_after = std::make_shared<std::promise<bool>>();
  auto answered = alive_after->get_future();
  auto id = std::make_shared<uint64_t>(0);
  asio::post(loop_.context(), [this, gone, alive_after, id] {
    auto token = std::make_shared<Token>(gone);  // held by the callback alone
    *id = daemon_->RequestLease(
        LeaseSpec{},
        [this, token, gone, alive_after, id](bool) {
          daemon_->CancelLeaseRequest(*id);
          alive_after->set_value(!gone->load() && token->gone == gone);
        },
        [](LeaseOutcome) { ADD_FAILURE() << "a withdrawn request has no outcome"; });
  });
  ASSERT_EQ(answered.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(answered.get()) << "the callback's state was destroyed while it ran";
  // And the withdrawal reached the service.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  bool withdrawn = false;
  while (!withdrawn && std::chrono::steady_clock::now() < deadline) {
    for (const auto& m : service_.received()) withdrawn |= m.has_cancel_lease_request();
    if (!withdrawn) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(withdrawn);
}

}  // namespace
}  // namespace prism

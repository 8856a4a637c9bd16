// TaskSubmitter on its own: a fake daemon grants, rejects or queues its lease requests, and a fake
// worker on a Unix socket answers its Hello and its PushTask frames. What a task goes through:
// the lease asked for with its shape, the push to the granted worker, the reply's value stored,
// the idle lease given back; a rejected request; a worker that dies with the task on it.
#include "worker/task_submitter.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/ids.h"
#include "base/resources.h"
#include "rpc/address.h"
#include "rpc/connection.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

constexpr char kToken[] = "submitter-test-token";

// Polls `pred` every millisecond until it holds or 5 s pass.
template <typename Pred>
bool Eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}

// The daemon's side of leases: records what the submitter asks for and gives back; the test
// answers each request (on the submitter's loop, as the real client does).
class FakeLeaseClient : public LeaseClient {
 public:
  struct Request {
    uint64_t id = 0;
    LeaseSpec spec;
    std::function<void(bool)> queued;
    std::function<void(LeaseOutcome)> done;
    bool cancelled = false;
  };
  struct Returned {
    uint64_t lease_id;
    bool worker_failed;
    bool operator==(const Returned& o) const {
      return lease_id == o.lease_id && worker_failed == o.worker_failed;
    }
  };

  explicit FakeLeaseClient(asio::io_context& io) : io_(io) {}

  uint64_t RequestLease(const LeaseSpec& spec, std::function<void(bool infeasible)> queued,
                        std::function<void(LeaseOutcome)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    Request r;
    r.id = next_id_++;
    r.spec = spec;
    r.queued = std::move(queued);
    r.done = std::move(done);
    requests_.push_back(std::move(r));
    return requests_.back().id;
  }
  void CancelLeaseRequest(uint64_t request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (Request& r : requests_) {
      if (r.id == request_id) r.cancelled = true;
    }
  }
  void ReturnLease(uint64_t lease_id, bool worker_failed) override {
    std::lock_guard<std::mutex> lock(mu_);
    returned_.push_back({lease_id, worker_failed});
  }

  size_t num_requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  LeaseSpec spec(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.at(i).spec;
  }
  bool cancelled(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.at(i).cancelled;
  }
  std::vector<Returned> returned() {
    std::lock_guard<std::mutex> lock(mu_);
    return returned_;
  }
  // Request `i` gets `outcome`, on the loop.
  void Answer(size_t i, LeaseOutcome outcome) {
    asio::post(io_, [this, i, outcome] {
      std::function<void(LeaseOutcome)> done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (requests_.at(i).cancelled) return;
        done = std::move(requests_.at(i).done);
      }
      done(outcome);
    });
  }
  // Request `i` has to wait for resources, on the loop.
  void Queue(size_t i, bool infeasible) {
    asio::post(io_, [this, i, infeasible] {
      std::function<void(bool)> queued;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (requests_.at(i).cancelled) return;
        queued = requests_.at(i).queued;
      }
      queued(infeasible);
    });
  }

 private:
  asio::io_context& io_;
  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::vector<Request> requests_;
  std::vector<Returned> returned_;
};

// A leased worker: accepts connections on its socket, answers a Hello carrying the token and its
// id with Welcome (as CoreWorker::OnPeerMessage does), records each PushTask, and answers it with
// an inline value "<function>@<attempt>", unless told to hold its replies.
class FakeWorker {
 public:
  FakeWorker(asio::io_context& io, std::string path)
      : io_(io), path_(std::move(path)), id_(RandomUniqueId()) {}

  void Start() {
    auto acceptor = rpc::Listen(io_, path_);
    ASSERT_TRUE(acceptor.ok()) << acceptor.status().ToString();
    acceptor_ = std::move(*acceptor);
    Accept();
  }
  // On the worker's loop: closes the acceptor and every connection.
  void Stop() {
    acceptor_->close();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : conns_) c->Close(Status::Cancelled("test over"));
  }

  rpc::Address address() const {
    rpc::Address a;
    a.set_socket_path(path_);
    a.set_worker_id(id_.Binary());
    return a;
  }
  void set_hold(bool hold) { hold_ = hold; }
  // Answers every push held so far.
  void ReplyHeld() {
    asio::post(io_, [this] {
      std::vector<std::pair<std::shared_ptr<rpc::Connection>, rpc::PushTask>> held;
      {
        std::lock_guard<std::mutex> lock(mu_);
        held.swap(held_);
      }
      for (auto& [conn, push] : held) Reply(*conn, push);
    });
  }
  // Closes the connections the submitter made (as if the worker died).
  void Die() {
    asio::post(io_, [this] {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& c : conns_) c->Close(Status::IOError("worker died"));
      held_.clear();
    });
  }
  std::vector<rpc::PushTask> pushes() {
    std::lock_guard<std::mutex> lock(mu_);
    return pushes_;
  }
  std::vector<rpc::Hello> hellos() {
    std::lock_guard<std::mutex> lock(mu_);
    return hellos_;
  }
  int open_connections() { return open_.load(); }

 private:
  void Accept() {
    acceptor_->async_accept([this](const asio::error_code& ec, rpc::UnixSocket socket) {
      if (ec) return;
      auto conn = rpc::Connection::Create(std::move(socket));
      {
        std::lock_guard<std::mutex> lock(mu_);
        conns_.push_back(conn);
      }
      open_++;
      conn->Start([this](rpc::Connection& c, rpc::Envelope& m) { OnMessage(c, m); },
                  [this](rpc::Connection&, const Status&) { open_--; });
      Accept();
    });
  }
  void OnMessage(rpc::Connection& c, rpc::Envelope& m) {
    if (c.user_data == nullptr) {
      Status st = m.has_hello() ? rpc::CheckHello(m.hello(), kToken)
                                : Status::ProtocolError("the first frame must be Hello");
      if (st.ok() && m.hello().expect_worker_id() != id_.Binary())
        st = Status::NotFound("not the expected worker");
      rpc::Envelope reply;
      if (!st.ok()) {
        reply.mutable_refused()->set_reason(st.ToString());
        c.Send(reply);
        c.Close(st);
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        hellos_.push_back(m.hello());
      }
      c.user_data = this;
      reply.mutable_welcome()->set_worker_id(id_.Binary());
      c.Send(reply);
      return;
    }
    if (!m.has_push_task()) {
      c.Close(Status::ProtocolError("unexpected message"));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    pushes_.push_back(m.push_task());
    if (hold_) {
      held_.emplace_back(std::static_pointer_cast<rpc::Connection>(c.shared_from_this()),
                         m.push_task());
      return;
    }
    Reply(c, m.push_task());
  }
  // As the task runner does for a task that returned one small value: inline data.
  static void Reply(rpc::Connection& c, const rpc::PushTask& push) {
    rpc::Envelope out;
    rpc::TaskReply* reply = out.mutable_task_reply();
    reply->set_task_id(push.spec().task_id());
    reply->set_attempt(push.spec().attempt());
    reply->add_returns()->set_data(push.spec().function() + "@" +
                                   std::to_string(push.spec().attempt()));
    c.Send(out);
  }

  asio::io_context& io_;
  std::string path_;
  WorkerId id_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;  // the worker loop's
  std::atomic<bool> hold_{false};
  std::atomic<int> open_{0};
  std::mutex mu_;
  std::vector<std::shared_ptr<rpc::Connection>> conns_;
  std::vector<rpc::PushTask> pushes_;
  std::vector<rpc::Hello> hellos_;
  std::vector<std::pair<std::shared_ptr<rpc::Connection>, rpc::PushTask>> held_;
};

// The core worker around the submitter: this process's address, and records of what the
// submitter asks it to free.
class FakeHost : public SubmitterHost {
 public:
  explicit FakeHost(internal::OwnerAddress self) : self_(std::move(self)) {}
  void FetchBorrowed(const ObjectId&, const internal::OwnerAddress&,
                     MemoryStore::Callback done) override {
    done(StoredObject::Error(rpc::ERROR_OBJECT_LOST, "no owner in this test"));
  }
  bool IsSelf(const internal::OwnerAddress& owner) override {
    return owner.worker_id == self_.worker_id;
  }
  internal::RefPtr NestedRef(const rpc::NestedRef&) override { return nullptr; }
  void DiscardStored(const ObjectId& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    discarded_.push_back(id);
  }
  bool ProducerGone(const internal::OwnerAddress&) override { return false; }
  void DiscardDevice(const ObjectId& id, const internal::OwnerAddress&) override {
    std::lock_guard<std::mutex> lock(mu_);
    discarded_.push_back(id);
  }
  void RemoveBorrowers(const rpc::RemoveBorrowers&) override {}
  void StreamItem(const TaskId&, uint64_t, StoredObject) override {}
  std::vector<ObjectId> discarded() {
    std::lock_guard<std::mutex> lock(mu_);
    return discarded_;
  }

 private:
  internal::OwnerAddress self_;
  std::mutex mu_;
  std::vector<ObjectId> discarded_;
};

class TaskSubmitterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("prism-submitter-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
    self_.socket_path = (dir_ / "self.sock").string();
    self_.worker_id = RandomUniqueId().Binary();
    host_ = std::make_unique<FakeHost>(self_);
    worker_ = std::make_unique<FakeWorker>(worker_loop_.context(), (dir_ / "worker.sock").string());
    worker_->Start();
    worker_loop_.Start("fake-worker");
    SubmitterConfig config;
    config.token = kToken;
    config.lease_idle_ms = 10;
    submitter_ = std::make_unique<TaskSubmitter>(loop_.context(), config, store_, leases_, *host_);
    loop_.Start("submitter");
  }
  void TearDown() override {
    OnLoop(loop_,
           [this] { submitter_->FailAll(StoredObject::Error(rpc::ERROR_SYSTEM, "test over")); });
    OnLoop(worker_loop_, [this] { worker_->Stop(); });
    loop_.Stop();
    worker_loop_.Stop();
    submitter_.reset();
    std::filesystem::remove_all(dir_);
  }
  template <typename F>
  static void OnLoop(rpc::EventLoop& loop, F f) {
    std::promise<void> done;
    asio::post(loop.context(), [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  // A task `function` needing `cpus` CPUs, with no arguments, its return object referenced.
  PendingTask MakeTask(const std::string& function, double cpus, int max_retries) {
    TaskId id = ChildTaskId(DriverTaskId(JobIdFromInt(3)), ++tasks_made_);
    PendingTask t;
    t.spec->set_task_id(id.Binary());
    t.spec->set_job_id(JobIdFromInt(3).Binary());
    t.spec->set_attempt(0);
    t.spec->set_function(function);
    t.spec->set_name(function);
    t.spec->set_num_returns(1);
    rpc::ToWire(self_, t.spec->mutable_caller());
    auto shape = ResourceSet::FromUnits({{"CPU", cpus}});
    EXPECT_TRUE(shape.ok());
    for (const auto& [name, milli] : shape->milli()) {
      auto* r = t.spec->add_resources();
      r->set_name(name);
      r->set_milli(milli);
    }
    t.lease.shape = *shape;
    t.retries_left = max_retries;
    t.return_id = ReturnObjectId(id, 1);
    store_.AddRef(t.return_id);
    return t;
  }
  // The task's result, waiting up to 5 s for it.
  std::optional<StoredObject> WaitResult(const ObjectId& id) {
    std::vector<std::optional<StoredObject>> values;
    std::vector<bool> ready = store_.Wait({id}, 1, std::chrono::steady_clock::now() + 5s, &values);
    if (!ready[0]) return std::nullopt;
    return values[0];
  }
  LeaseOutcome Grant(uint64_t lease_id) {
    LeaseOutcome o;
    o.lease_id = lease_id;
    o.worker = worker_->address();
    return o;
  }

  std::filesystem::path dir_;
  internal::OwnerAddress self_;
  rpc::EventLoop loop_;         // the submitter's
  rpc::EventLoop worker_loop_;  // the fake worker's
  MemoryStore store_;
  FakeLeaseClient leases_{loop_.context()};
  std::unique_ptr<FakeHost> host_;
  std::unique_ptr<FakeWorker> worker_;
  std::unique_ptr<TaskSubmitter> submitter_;
  uint64_t tasks_made_ = 0;
};

TEST_F(TaskSubmitterTest, ATaskLeasesAWorkerOfItsShapeRunsThereAndTheIdleLeaseGoesBack) {
  PendingTask t = MakeTask("square", 2, 0);
  const ObjectId rid = t.return_id;
  const std::string task_id = t.spec->task_id();
  submitter_->Submit(std::move(t));

  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 1; }));
  LeaseSpec asked = leases_.spec(0);
  EXPECT_EQ(asked.shape.Get("CPU"), 2000);
  EXPECT_EQ(asked.shape.milli().size(), 1u);
  EXPECT_TRUE(worker_->pushes().empty());  // nothing goes out before a lease

  leases_.Answer(0, Grant(41));
  std::optional<StoredObject> result = WaitResult(rid);
  ASSERT_TRUE(result.has_value());
  ASSERT_FALSE(result->is_error()) << result->error.message();
  EXPECT_EQ(*result->data, "square@0");

  ASSERT_EQ(worker_->hellos().size(), 1u);
  EXPECT_EQ(worker_->hellos()[0].expect_worker_id(), worker_->address().worker_id());
  std::vector<rpc::PushTask> pushes = worker_->pushes();
  ASSERT_EQ(pushes.size(), 1u);
  EXPECT_EQ(pushes[0].lease_id(), 41u);
  EXPECT_EQ(pushes[0].spec().task_id(), task_id);
  EXPECT_EQ(pushes[0].spec().attempt(), 0u);

  // Idle for lease_idle_ms: returned (not as failed), and its connection closed.
  ASSERT_TRUE(Eventually([&] { return !leases_.returned().empty(); }));
  EXPECT_EQ(leases_.returned(), (std::vector<FakeLeaseClient::Returned>{{41, false}}));
  EXPECT_TRUE(Eventually([&] { return worker_->open_connections() == 0; }));
  RuntimeStats s = submitter_->stats();
  EXPECT_EQ(s.tasks_submitted, 1u);
  EXPECT_EQ(s.leases_requested, 1u);
  EXPECT_EQ(s.leases_granted, 1u);
  EXPECT_EQ(s.leases_returned, 1u);
  EXPECT_EQ(leases_.num_requests(), 1u);
}

TEST_F(TaskSubmitterTest, ARejectedLeaseRequestFailsTheTaskWithTheRejectionsMessage) {
  PendingTask t = MakeTask("huge", 64, 3);
  const ObjectId rid = t.return_id;
  submitter_->Submit(std::move(t));
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 1; }));

  LeaseOutcome no;
  no.status = Status(StatusCode::kInfeasible, "no node has 64 CPUs");
  no.kind = rpc::ERROR_INFEASIBLE;
  leases_.Answer(0, no);

  std::optional<StoredObject> result = WaitResult(rid);
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->is_error());
  EXPECT_EQ(result->error.kind(), rpc::ERROR_INFEASIBLE);
  EXPECT_EQ(result->error.message(), "no node has 64 CPUs");
  EXPECT_TRUE(worker_->pushes().empty());
  EXPECT_TRUE(leases_.returned().empty());  // nothing was granted, so nothing goes back

  // A rejection that names no kind is a system error.
  PendingTask t2 = MakeTask("huge", 64, 0);
  const ObjectId rid2 = t2.return_id;
  submitter_->Submit(std::move(t2));
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 2; }));
  leases_.Answer(1, LeaseOutcome{Status::Unavailable("the node is draining")});
  result = WaitResult(rid2);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->error.kind(), rpc::ERROR_SYSTEM);
  EXPECT_EQ(result->error.message(), "the node is draining");
}

TEST_F(TaskSubmitterTest, AWorkerThatDiesMidTaskMakesTheTaskRunAgainOnANewLease) {
  worker_->set_hold(true);
  PendingTask t = MakeTask("flaky", 1, 1);
  const ObjectId rid = t.return_id;
  submitter_->Submit(std::move(t));
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 1; }));
  leases_.Answer(0, Grant(7));
  ASSERT_TRUE(Eventually([&] { return worker_->pushes().size() == 1; }));

  worker_->Die();
  // The lease goes back as failed, and a new one is asked for the retry.
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 2; }));
  EXPECT_EQ(leases_.returned(), (std::vector<FakeLeaseClient::Returned>{{7, true}}));
  EXPECT_FALSE(store_.GetIfReady(rid).has_value());
  EXPECT_EQ(leases_.spec(1).shape.Get("CPU"), 1000);

  worker_->set_hold(false);
  leases_.Answer(1, Grant(8));
  std::optional<StoredObject> result = WaitResult(rid);
  ASSERT_TRUE(result.has_value());
  ASSERT_FALSE(result->is_error()) << result->error.message();
  EXPECT_EQ(*result->data, "flaky@1");
  std::vector<rpc::PushTask> pushes = worker_->pushes();
  ASSERT_EQ(pushes.size(), 2u);
  EXPECT_EQ(pushes[1].lease_id(), 8u);
  EXPECT_EQ(pushes[1].spec().attempt(), 1u);
  EXPECT_EQ(submitter_->stats().tasks_retried, 1u);
}

TEST_F(TaskSubmitterTest, AWorkerThatDiesMidTaskFailsATaskWithNoRetriesLeft) {
  worker_->set_hold(true);
  PendingTask t = MakeTask("fragile", 1, 0);
  const ObjectId rid = t.return_id;
  submitter_->Submit(std::move(t));
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 1; }));
  leases_.Answer(0, Grant(9));
  ASSERT_TRUE(Eventually([&] { return worker_->pushes().size() == 1; }));

  worker_->Die();
  std::optional<StoredObject> result = WaitResult(rid);
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->is_error());
  EXPECT_EQ(result->error.kind(), rpc::ERROR_WORKER_CRASHED);
  EXPECT_NE(result->error.message().find("the worker running task fragile died"), std::string::npos)
      << result->error.message();
  EXPECT_NE(result->error.message().find("after 1 attempt(s)"), std::string::npos);
  EXPECT_EQ(leases_.returned(), (std::vector<FakeLeaseClient::Returned>{{9, true}}));
  EXPECT_EQ(leases_.num_requests(), 1u);  // nothing left to run
  EXPECT_EQ(submitter_->stats().tasks_retried, 0u);
}

TEST_F(TaskSubmitterTest, AQueuedLeaseRequestPipelinesTheWaitingTaskOnTheLeaseItHas) {
  worker_->set_hold(true);
  PendingTask a = MakeTask("a", 1, 0);
  PendingTask b = MakeTask("b", 1, 0);
  const ObjectId ra = a.return_id, rb = b.return_id;
  submitter_->Submit(std::move(a));
  submitter_->Submit(std::move(b));
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 1; }));
  leases_.Answer(0, Grant(5));
  // One task per lease while the node may have more: `a` goes out, a second lease is asked
  // for `b`.
  ASSERT_TRUE(Eventually([&] { return leases_.num_requests() == 2; }));
  ASSERT_TRUE(Eventually([&] { return worker_->pushes().size() == 1; }));

  // The node is full: `b` goes behind `a` on the lease there is, and the request is withdrawn.
  leases_.Queue(1, /*infeasible=*/false);
  ASSERT_TRUE(Eventually([&] { return worker_->pushes().size() == 2; }));
  EXPECT_TRUE(Eventually([&] { return leases_.cancelled(1); }));
  std::vector<rpc::PushTask> pushes = worker_->pushes();
  EXPECT_EQ(pushes[0].spec().function(), "a");
  EXPECT_EQ(pushes[1].spec().function(), "b");
  EXPECT_EQ(pushes[1].lease_id(), 5u);

  worker_->ReplyHeld();
  std::optional<StoredObject> va = WaitResult(ra), vb = WaitResult(rb);
  ASSERT_TRUE(va.has_value() && vb.has_value());
  EXPECT_EQ(*va->data, "a@0");
  EXPECT_EQ(*vb->data, "b@0");
  ASSERT_TRUE(Eventually([&] { return !leases_.returned().empty(); }));
  EXPECT_EQ(leases_.returned(), (std::vector<FakeLeaseClient::Returned>{{5, false}}));
}

}  // namespace
}  // namespace prism

// OwnerClients against fake owners listening on Unix sockets: fetches, borrow registrations and
// releases (one batch per owner and borrower, releases held while registrations are unanswered,
// releases to a caller on the caller's connection), device imports, and owners that die or never
// existed.
#include "worker/owner_clients.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "base/ids.h"
#include "rpc/connection.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

std::string TempSocketPath(const std::string& name) {
  return "/tmp/prism-oc-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

ObjectId Oid(uint8_t n) {
  return ObjectId::FromBinary(std::string(ObjectId::kSize, static_cast<char>(n)));
}

// Waits (up to 5 s) until `pred` holds.
template <typename Pred>
bool Eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Keeps the event loop busy while it lives (what it was posted runs after).
class PauseLoop {
 public:
  explicit PauseLoop(asio::io_context& io) {
    auto running = std::make_shared<std::promise<void>>();
    auto started = running->get_future();
    asio::post(io, [running, released = released_] {
      running->set_value();
      released->get_future().wait();
    });
    started.wait();
  }
  ~PauseLoop() { released_->set_value(); }

 private:
  std::shared_ptr<std::promise<void>> released_ = std::make_shared<std::promise<void>>();
};

// An owner's core worker, reduced to the messages OwnerClients sends: it answers the handshake,
// values it was given (or errors), registrations (at once, or when told), imports; it records
// everything it received.
class FakeOwner {
 public:
  FakeOwner(asio::io_context& io, std::string name)
      : io_(io), path_(TempSocketPath(name)), id_(RandomUniqueId()) {
    auto acceptor = rpc::Listen(io_, path_);
    EXPECT_TRUE(acceptor.ok());
    acceptor_ = std::move(*acceptor);
    Accept();
  }
  ~FakeOwner() {
    if (!killed_) Kill();  // no handler of a connection outlives this object
  }

  internal::OwnerAddress address() const { return {path_, id_.Binary(), std::string(16, 'n')}; }
  const WorkerId& id() const { return id_; }

  // Set before the client asks (the loop reads them).
  std::map<ObjectId, std::string> values;
  std::set<ObjectId> in_store, lost, silent;
  std::atomic<bool> hold_adds{false};

  std::vector<rpc::Envelope> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }
  size_t count(rpc::Envelope::BodyCase kind) {
    size_t n = 0;
    for (const auto& m : received()) n += m.body_case() == kind ? 1 : 0;
    return n;
  }
  // Answers the registrations held so far (from the loop).
  void AnswerHeldAdds() {
    asio::post(io_, [this] {
      for (auto& [conn, m] : held_) AnswerAdds(*conn, m);
      held_.clear();
    });
  }
  // The owner dies: its socket and every connection close.
  void Kill() {
    killed_ = true;
    std::promise<void> done;
    asio::post(io_, [this, &done] {
      asio::error_code ec;
      acceptor_->close(ec);
      for (auto& c : conns_) c->Close(Status::Cancelled("owner died"));
      done.set_value();
    });
    done.get_future().wait();
    ::unlink(path_.c_str());
  }

 private:
  void Accept() {
    acceptor_->async_accept([this](const asio::error_code& ec, rpc::UnixSocket sock) {
      if (ec) return;
      auto conn = rpc::Connection::Create(std::move(sock));
      conns_.push_back(conn);
      conn->Start([this](rpc::Connection& c, rpc::Envelope& m) { OnMessage(c, m); },
                  [](rpc::Connection&, const Status&) {});
      Accept();
    });
  }
  void OnMessage(rpc::Connection& c, rpc::Envelope& m) {
    if (m.has_hello()) {
      rpc::Envelope w;
      w.mutable_welcome()->set_worker_id(id_.Binary());
      c.Send(w);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      received_.push_back(m);
    }
    if (m.has_get_object()) {
      ObjectId id = ObjectId::FromBinary(m.get_object().object_id());
      if (silent.count(id) > 0) return;
      rpc::Envelope r;
      auto* g = r.mutable_get_object_reply();
      g->set_request_id(m.get_object().request_id());
      if (values.count(id) > 0) {
        g->set_data(values[id]);
      } else if (in_store.count(id) > 0) {
        g->set_in_store(true);
        g->set_size(42);
      } else {
        g->mutable_error()->set_kind(rpc::ERROR_OBJECT_LOST);
        g->mutable_error()->set_message("not here");
      }
      c.Send(r);
    } else if (m.has_add_borrowers()) {
      if (hold_adds) {
        held_.emplace_back(std::static_pointer_cast<rpc::Connection>(c.shared_from_this()), m);
      } else {
        AnswerAdds(c, m);
      }
    } else if (m.has_import_device_object()) {
      const auto& q = m.import_device_object();
      if (q.id() == "silent") return;
      rpc::Envelope r;
      r.mutable_device_object_imported()->set_request_id(q.request_id());
      r.mutable_device_object_imported()->set_lost(q.id() == "gone");
      r.mutable_device_object_imported()->set_memory_handle("handle-of-" + q.id());
      c.Send(r);
    }
  }
  void AnswerAdds(rpc::Connection& c, const rpc::Envelope& m) {
    rpc::Envelope r;
    r.mutable_borrowers_added()->set_request_id(m.add_borrowers().request_id());
    for (const auto& bin : m.add_borrowers().object_ids()) {
      if (lost.count(ObjectId::FromBinary(bin)) > 0) r.mutable_borrowers_added()->add_lost(bin);
    }
    c.Send(r);
  }

  asio::io_context& io_;
  std::string path_;
  WorkerId id_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;
  std::vector<std::shared_ptr<rpc::Connection>> conns_;                           // loop only
  std::vector<std::pair<std::shared_ptr<rpc::Connection>, rpc::Envelope>> held_;  // loop only
  bool killed_ = false;
  std::mutex mu_;
  std::vector<rpc::Envelope> received_;
};

class OwnerClientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.Start("test-loop");
    MakeClients({});
  }
  void TearDown() override {
    std::promise<void> done;
    asio::post(loop_.context(), [this, &done] {
      clients_->CloseAll();
      done.set_value();
    });
    done.get_future().wait();
    loop_.Stop();
  }
  void MakeClients(OwnerClients::Config config) {
    config.token = "";
    config.self = self_;
    clients_ = std::make_unique<OwnerClients>(loop_.context(), config, [this](const ObjectId& id) {
      std::lock_guard<std::mutex> lock(mu_);
      undone_.push_back(id);
    });
  }
  // Fetches `id` from `owner` on the loop and waits for the answer.
  StoredObject Fetch(const ObjectId& id, const internal::OwnerAddress& owner) {
    auto answer = std::make_shared<std::promise<StoredObject>>();
    auto f = answer->get_future();
    asio::post(loop_.context(), [this, id, owner, answer] {
      clients_->Fetch(id, owner, [answer](const StoredObject& obj) { answer->set_value(obj); });
    });
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }
  std::vector<ObjectId> undone() {
    std::lock_guard<std::mutex> lock(mu_);
    return undone_;
  }

  rpc::EventLoop loop_;
  WorkerId self_ = RandomUniqueId();
  std::unique_ptr<OwnerClients> clients_;
  std::mutex mu_;
  std::vector<ObjectId> undone_;
};

TEST_F(OwnerClientsTest, AFetchGetsTheOwnersValueWhereItLiesOrItsError) {
  FakeOwner owner(loop_.context(), "fetch");
  owner.values[Oid(1)] = "abc";
  owner.in_store.insert(Oid(2));

  StoredObject value = Fetch(Oid(1), owner.address());
  ASSERT_FALSE(value.is_error());
  ASSERT_FALSE(value.in_store);
  EXPECT_EQ(*value.data, "abc");

  StoredObject stored = Fetch(Oid(2), owner.address());
  ASSERT_FALSE(stored.is_error());
  EXPECT_TRUE(stored.in_store);
  EXPECT_EQ(stored.size, 42u);

  StoredObject missing = Fetch(Oid(3), owner.address());
  ASSERT_TRUE(missing.is_error());
  EXPECT_EQ(missing.error.kind(), rpc::ERROR_OBJECT_LOST);
  EXPECT_EQ(missing.error.message(), "not here");
  // One connection carried all three.
  EXPECT_EQ(owner.count(rpc::Envelope::kGetObject), 3u);
}

TEST_F(OwnerClientsTest, AFetchFromAnOwnerThatDiesOrNeverWasFailsWithOwnerDied) {
  internal::OwnerAddress nowhere{TempSocketPath("nowhere"), RandomUniqueId().Binary(), ""};
  StoredObject unreachable = Fetch(Oid(1), nowhere);
  ASSERT_TRUE(unreachable.is_error());
  EXPECT_EQ(unreachable.error.kind(), rpc::ERROR_OWNER_DIED);
  EXPECT_NE(unreachable.error.message().find(Oid(1).Hex()), std::string::npos);

  FakeOwner owner(loop_.context(), "dies");
  owner.silent.insert(Oid(5));
  auto answer = std::make_shared<std::promise<StoredObject>>();
  auto f = answer->get_future();
  auto address = owner.address();
  asio::post(loop_.context(), [this, address, answer] {
    clients_->Fetch(Oid(5), address, [answer](const StoredObject& obj) { answer->set_value(obj); });
  });
  ASSERT_TRUE(Eventually([&] { return owner.count(rpc::Envelope::kGetObject) == 1; }));
  EXPECT_EQ(f.wait_for(50ms), std::future_status::timeout);  // the owner holds it
  owner.Kill();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  StoredObject died = f.get();
  ASSERT_TRUE(died.is_error());
  EXPECT_EQ(died.error.kind(), rpc::ERROR_OWNER_DIED);
}

TEST_F(OwnerClientsTest, RegistrationsGoInOneBatchPerBorrowerAndReleasesWaitForTheirAnswers) {
  FakeOwner owner(loop_.context(), "batch");
  owner.hold_adds = true;
  WorkerId caller = RandomUniqueId();
  {
    // Queued from this thread while the loop is busy (as a burst is): one flush takes them all,
    // one AddBorrowers per borrower.
    PauseLoop pause(loop_.context());
    clients_->QueueAddBorrower(owner.address(), Oid(1), self_);
    clients_->QueueAddBorrower(owner.address(), Oid(2), self_);
    clients_->QueueAddBorrower(owner.address(), Oid(3), self_);
    clients_->QueueAddBorrower(owner.address(), Oid(4), caller);
    clients_->QueueRelease(owner.address(), Oid(9), 2);
  }
  ASSERT_TRUE(Eventually([&] { return owner.count(rpc::Envelope::kAddBorrowers) == 2; }));
  EXPECT_EQ(clients_->pending_registrations(), 4);
  std::map<std::string, std::vector<std::string>> by_borrower;
  for (const auto& m : owner.received()) {
    if (!m.has_add_borrowers()) continue;
    for (const auto& id : m.add_borrowers().object_ids())
      by_borrower[m.add_borrowers().borrower()].push_back(id);
  }
  EXPECT_EQ(by_borrower[self_.Binary()],
            (std::vector<std::string>{Oid(1).Binary(), Oid(2).Binary(), Oid(3).Binary()}));
  EXPECT_EQ(by_borrower[caller.Binary()], (std::vector<std::string>{Oid(4).Binary()}));

  // A task's reply that lends these waits for their answers; so does the release.
  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    clients_->WaitForRegistrations();
    waited = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(waited);
  EXPECT_EQ(owner.count(rpc::Envelope::kRemoveBorrowers), 0u);

  owner.AnswerHeldAdds();
  waiter.join();
  EXPECT_TRUE(waited);
  EXPECT_EQ(clients_->pending_registrations(), 0);
  ASSERT_TRUE(Eventually([&] { return owner.count(rpc::Envelope::kRemoveBorrowers) == 1; }));
  for (const auto& m : owner.received()) {
    if (!m.has_remove_borrowers()) continue;
    EXPECT_EQ(m.remove_borrowers().borrower(), self_.Binary());
    ASSERT_EQ(m.remove_borrowers().object_ids_size(), 1);
    EXPECT_EQ(m.remove_borrowers().object_ids(0), Oid(9).Binary());
    EXPECT_EQ(m.remove_borrowers().counts(0), 2u);
  }
  EXPECT_TRUE(undone().empty());
}

TEST_F(OwnerClientsTest, ARegistrationTheOwnerFoundGoneIsUndoneOnlyForThisProcess) {
  FakeOwner owner(loop_.context(), "lost");
  owner.lost = {Oid(1), Oid(2)};
  clients_->QueueAddBorrower(owner.address(), Oid(1), self_);
  clients_->QueueAddBorrower(owner.address(), Oid(2),
                             RandomUniqueId());  // a caller's: not ours to undo
  clients_->QueueAddBorrower(owner.address(), Oid(3), self_);
  clients_->WaitForRegistrations();
  EXPECT_EQ(clients_->pending_registrations(), 0);
  EXPECT_EQ(undone(), std::vector<ObjectId>{Oid(1)});
}

TEST_F(OwnerClientsTest, ReleasesToACallerGoOnItsConnectionBehindItsReplies) {
  FakeOwner owner(loop_.context(), "caller");
  // The caller's connection: this end is what RecordCaller is given, the other stands for it.
  asio::local::stream_protocol::socket a(loop_.context()), b(loop_.context());
  asio::local::connect_pair(a, b);
  auto ours = rpc::Connection::Create(std::move(a));
  auto theirs = rpc::Connection::Create(std::move(b));
  std::mutex mu;
  std::vector<rpc::Envelope> at_caller;
  asio::post(loop_.context(), [&] {
    ours->Start([](rpc::Connection&, rpc::Envelope&) {}, [](rpc::Connection&, const Status&) {});
    theirs->Start(
        [&](rpc::Connection&, rpc::Envelope& m) {
          std::lock_guard<std::mutex> lock(mu);
          at_caller.push_back(m);
        },
        [](rpc::Connection&, const Status&) {});
  });
  clients_->RecordCaller(owner.id().Binary(), ours);
  clients_->QueueRelease(owner.address(), Oid(7), 1);
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> lock(mu);
    return at_caller.size() == 1;
  }));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_TRUE(at_caller[0].has_remove_borrowers());
    EXPECT_EQ(at_caller[0].remove_borrowers().object_ids(0), Oid(7).Binary());
  }
  EXPECT_EQ(owner.count(rpc::Envelope::kRemoveBorrowers), 0u);

  // Once that connection closed, releases go to the owner's own socket.
  std::promise<void> closed;
  asio::post(loop_.context(), [&] {
    ours->Close(Status::Cancelled("caller gone"));
    theirs->Close(Status::Cancelled("caller gone"));
    closed.set_value();
  });
  closed.get_future().wait();
  clients_->QueueRelease(owner.address(), Oid(8), 1);
  ASSERT_TRUE(Eventually([&] { return owner.count(rpc::Envelope::kRemoveBorrowers) == 1; }));
}

TEST_F(OwnerClientsTest, RegistrationsAtAnOwnerThatDiesCountAsAnswered) {
  FakeOwner owner(loop_.context(), "regdies");
  owner.hold_adds = true;
  {
    PauseLoop pause(loop_.context());
    clients_->QueueAddBorrower(owner.address(), Oid(1), self_);
    clients_->QueueAddBorrower(owner.address(), Oid(2), self_);
  }
  ASSERT_TRUE(Eventually([&] { return owner.count(rpc::Envelope::kAddBorrowers) == 1; }));
  EXPECT_EQ(clients_->pending_registrations(), 2);
  owner.Kill();
  ASSERT_TRUE(Eventually([&] { return clients_->pending_registrations() == 0; }));
  clients_->WaitForRegistrations();  // returns at once
  // Registrations at an owner that never was count as answered as well.
  internal::OwnerAddress nowhere{TempSocketPath("nowhere"), RandomUniqueId().Binary(), ""};
  clients_->QueueAddBorrower(nowhere, Oid(3), self_);
  ASSERT_TRUE(Eventually([&] { return clients_->pending_registrations() == 0; }));
}

TEST_F(OwnerClientsTest, ADeviceImportReturnsTheProducersHandleOrNothing) {
  OwnerClients::Config config;
  config.import_wait = 300ms;
  MakeClients(config);
  FakeOwner producer(loop_.context(), "producer");
  EXPECT_EQ(clients_->ImportDeviceObject(producer.address(), "t1", ""),
            std::optional<std::string>("handle-of-t1"));
  EXPECT_EQ(clients_->ImportDeviceObject(producer.address(), "gone", ""), std::nullopt);
  for (const auto& m : producer.received()) {
    if (m.has_import_device_object()) {
      EXPECT_EQ(m.import_device_object().importer(), self_.Binary());
    }
  }
  // No answer within the wait: given up on, and released so the producer does not count it.
  EXPECT_EQ(clients_->ImportDeviceObject(producer.address(), "silent", ""), std::nullopt);
  ASSERT_TRUE(
      Eventually([&] { return producer.count(rpc::Envelope::kReleaseDeviceObjects) == 1; }));
  for (const auto& m : producer.received()) {
    if (!m.has_release_device_objects()) continue;
    ASSERT_EQ(m.release_device_objects().ids_size(), 1);
    EXPECT_EQ(m.release_device_objects().ids(0), "silent");
    EXPECT_EQ(m.release_device_objects().importer(), self_.Binary());
  }
  // A producer that is gone has nothing to hand out.
  producer.Kill();
  EXPECT_EQ(clients_->ImportDeviceObject(producer.address(), "t2", ""), std::nullopt);
}

}  // namespace
}  // namespace prism

// Scheduling across nodes on one machine (loopback), against same-run floors:
//  - tasks per second when the driver's node has no CPUs and every task runs on another node
//    (leases spilled there, tasks sent through the relays), next to the driver's own node
//    running them, in interleaved rounds;
//  - how long a lease that must go to another node takes to be granted (the driver's daemon
//    answers with a spillback, the request goes on through the relay to the other daemon), next
//    to a lease granted by the driver's own daemon and to a gRPC unary round trip between the
//    two nodes.
//
//   cluster_scheduling_benchmark [--rounds 5] [--tasks 5000] [--leases 300]
#include <prism/cluster_utils.h>
#include <prism/prism.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/process_info.h"
#include "cluster_floor.h"
#include "node/node_daemon.h"
#include "node/session.h"
#include "rpc/blocking_client.h"
#include "rpc/frame.h"
#include "rpc/grpc_channel.h"
#include "worker/lease_client.h"

namespace {

using Clock = std::chrono::steady_clock;

int Noop(int x) { return x; }
PRISM_REMOTE(Noop);

using prism::bench::Median;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Tasks per second through the public API: `n` tasks submitted, then all their results read.
double TasksPerSecond(int n) {
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(static_cast<size_t>(n));
  for (int i = 0; i < 200; ++i) refs.push_back(prism::Task(Noop).Remote(i));  // workers warm
  for (auto& r : refs) prism::Get(r);
  refs.clear();
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) refs.push_back(prism::Task(Noop).Remote(i));
  for (auto& r : refs) prism::Get(r);
  return n / Seconds(t0);
}

// One driver of the two-node cluster, at the level of its daemon connection: lease requests
// timed one at a time.
class LeaseBench {
 public:
  LeaseBench(const std::string& session, const std::string& token) {
    prism::rpc::Envelope hello = prism::rpc::MakeHello(prism::rpc::ROLE_DRIVER, token);
    worker_ = prism::RandomUniqueId();
    hello.mutable_hello()->set_worker_id(worker_.Binary());
    hello.mutable_hello()->set_build_id(prism::SelfBuildId());
    prism::rpc::Welcome welcome;
    auto client = prism::rpc::BlockingClient::ConnectAndHello(prism::DaemonSocketPath(session),
                                                              hello, &welcome);
    if (!client.ok()) {
      std::fprintf(stderr, "cannot connect: %s\n", client.status().ToString().c_str());
      std::exit(1);
    }
    job_ = welcome.job_id();
    prism::rpc::SetLocalNode(welcome.node_id(), session + "/relay.sock");
    std::string leftover = client->TakeBuffered();
    prism::rpc::UnixSocket sock(loop_.context());
    sock.assign(asio::local::stream_protocol(), client->Release());
    auto conn = prism::rpc::Connection::Create(std::move(sock));
    daemon_ = std::make_unique<prism::DaemonClient>(conn, [](const prism::Status&) {});
    daemon_->set_remote_dialer(
        [this, token](const prism::rpc::Address& d,
                      std::function<void(prism::Result<prism::rpc::Connected>)> done) {
          prism::rpc::Envelope h = prism::rpc::MakeHello(prism::rpc::ROLE_REMOTE_CALLER, token);
          h.mutable_hello()->set_job_id(job_);
          h.mutable_hello()->set_worker_id(worker_.Binary());
          prism::rpc::AsyncConnectAndHello(loop_.context(), d, h, std::chrono::seconds(10),
                                           std::move(done));
        },
        prism::rpc::kDefaultMaxFrameBytes);
    daemon_->Start(std::move(leftover));
    loop_.Start("lease-bench");
  }
  ~LeaseBench() {
    std::promise<void> closed;
    asio::post(loop_.context(), [&] {
      daemon_->Close();
      closed.set_value();
    });
    closed.get_future().wait();
    loop_.Stop();
  }

  // Microseconds from asking to holding the lease (then given back), median of `n`: timed on the
  // event loop, where the task submitter asks (this thread's hand-offs to it are not counted).
  double GrantUs(const prism::LeaseSpec& spec, int n) {
    std::vector<double> us;
    for (int i = 0; i < n; ++i) {
      std::promise<prism::LeaseOutcome> got;
      double took = 0;
      asio::post(loop_.context(), [&] {
        auto t0 = Clock::now();
        daemon_->RequestLease(spec, nullptr, [&, t0](prism::LeaseOutcome o) {
          took = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
          got.set_value(o);
        });
      });
      prism::LeaseOutcome o = got.get_future().get();
      if (!o.status.ok()) {
        std::fprintf(stderr, "lease refused: %s\n", o.status.ToString().c_str());
        std::exit(1);
      }
      if (i > 0) us.push_back(took);  // (the first starts the worker)
      std::promise<void> back;
      asio::post(loop_.context(), [&] {
        daemon_->ReturnLease(o.lease_id, false);
        back.set_value();
      });
      back.get_future().wait();
      // The return reaches the daemon before the next request (one connection, in order).
    }
    return Median(us);
  }
  uint64_t spilled() {
    std::promise<uint64_t> n;
    asio::post(loop_.context(), [&] { n.set_value(daemon_->spilled_total()); });
    return n.get_future().get();
  }

 private:
  prism::rpc::EventLoop loop_;
  prism::WorkerId worker_;
  std::string job_;
  std::unique_ptr<prism::DaemonClient> daemon_;
};

// Microseconds per round trip with node B's daemon through node A's relay (a status request,
// answered at once): the floor of any exchange between a process and another node's daemon.
double RelayedStatusUs(const std::string& session_a, const prism::cluster_utils::ClusterNode& b,
                       const std::string& token, int n) {
  auto client = prism::rpc::BlockingClient::Connect(session_a + "/relay.sock");
  if (!client.ok()) std::exit(1);
  prism::rpc::Envelope open;
  open.mutable_relay_open()->set_node_address(b.address);
  open.mutable_relay_open()->set_socket_name("daemon.sock");
  std::string bytes;
  prism::rpc::AppendFrame(open, &bytes);
  if (!client->SendRaw(bytes).ok()) std::exit(1);
  if (!client->Send(prism::rpc::MakeHello(prism::rpc::ROLE_CLIENT, token)).ok()) std::exit(1);
  if (!client->Receive(5000).ok()) std::exit(1);  // Welcome
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    prism::rpc::Envelope req;
    req.mutable_status_request()->set_request_id(static_cast<uint64_t>(i) + 1);
    auto t0 = Clock::now();
    if (!client->Send(req).ok()) std::exit(1);
    if (!client->Receive(5000).ok()) std::exit(1);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return Median(us);
}

}  // namespace

int main(int argc, char** argv) {
  if (prism::IsWorkerProcess()) prism::Init();
  CLI::App app{"prism: scheduling across the nodes of a cluster on this machine"};
  int rounds = 5, tasks = 5000, leases = 300;
  app.add_option("--rounds", rounds, "interleaved rounds (medians reported)");
  app.add_option("--tasks", tasks, "tasks per round");
  app.add_option("--leases", leases, "lease requests timed in each setting");
  CLI11_PARSE(app, argc, argv);

  // Tasks per second: the driver's node runs them, or another node does (the driver's has no
  // CPUs). Fresh clusters each round, alternating.
  std::vector<double> local_tps, remote_tps;
  for (int r = 0; r < rounds; ++r) {
    {
      prism::cluster_utils::Cluster one({.num_cpus = 2});
      prism::Init({.address = one.address()});
      local_tps.push_back(TasksPerSecond(tasks));
      prism::Shutdown();
    }
    {
      prism::cluster_utils::Cluster two({.num_cpus = 0});
      two.AddNode({.num_cpus = 2});
      two.WaitForNodes();
      prism::Init({.address = two.address()});
      remote_tps.push_back(TasksPerSecond(tasks));
      prism::Shutdown();
    }
  }

  // Lease grants on a two-node cluster: "there" is a resource only node B has.
  prism::cluster_utils::Cluster cluster({.num_cpus = 1});
  auto b = cluster.AddNode({.num_cpus = 1, .resources = {{"there", 1}}});
  cluster.WaitForNodes();
  auto token = prism::LocalClusterToken(cluster.address());
  if (!token.ok()) return 1;
  double local_us = 0, spill_us = 0, unary_us = 0, relayed_us = 0;
  uint64_t spilled = 0;
  {
    LeaseBench bench(cluster.head().session_dir, *token);
    prism::LeaseSpec here;
    here.shape = *prism::ResourceSet::FromUnits({{"CPU", 1}});
    here.runtime = "cpp";
    here.placement.set_node_id(prism::UniqueIdFromHex(cluster.head().node_id).Binary());
    prism::LeaseSpec there;
    there.shape = *prism::ResourceSet::FromUnits({{"CPU", 1}, {"there", 1}});
    there.runtime = "cpp";
    std::vector<double> l, s;
    for (int r = 0; r < rounds; ++r) {
      l.push_back(bench.GrantUs(here, leases / rounds + 1));
      s.push_back(bench.GrantUs(there, leases / rounds + 1));
    }
    local_us = Median(l);
    spill_us = Median(s);
    relayed_us = RelayedStatusUs(cluster.head().session_dir, b, *token, leases);
    spilled = bench.spilled();
  }
  unary_us = prism::bench::GrpcUnaryRoundTripUs(b.address, *token, rounds);

  std::printf("| figure | median of %d rounds |\n|---|---|\n", rounds);
  std::printf("| tasks/s, driver's node runs them | %.0f |\n", Median(local_tps));
  std::printf("| tasks/s, another node runs them (driver's node has no CPUs) | %.0f (%.0f%%) |\n",
              Median(remote_tps), 100 * Median(remote_tps) / Median(local_tps));
  std::printf("| lease granted by the driver's daemon | %.0f us |\n", local_us);
  std::printf("| lease spilled to another node and granted there | %.0f us |\n", spill_us);
  std::printf("| status request to B's daemon through A's relay | %.0f us |\n", relayed_us);
  std::printf("| gRPC unary round trip between the nodes (floor) | %.0f us |\n", unary_us);
  std::printf("| spilled lease in gRPC round trips | %.2f |\n", spill_us / unary_us);
  std::printf("\n(%llu lease requests spilled; each round's tasks: %d)\n",
              static_cast<unsigned long long>(spilled), tasks);
  return 0;
}

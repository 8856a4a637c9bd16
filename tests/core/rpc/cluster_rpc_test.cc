// gRPC between machines on loopback: the handshake on the cluster port (version and token), the
// control service's calls, the listening address, and hostile bytes on the port.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "base/ids.h"
#include "cluster.pb.h"
#include "control/control_server.h"
#include "control/node_table.h"
#include "node/node_cluster.h"
#include "rpc/frame.h"
#include "rpc/grpc_channel.h"

namespace prism {
namespace {

using namespace std::chrono_literals;

constexpr char kToken[] = "the-right-token";

class ClusterRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    rpc::ConfigureClusterServer(builder);
    builder.RegisterService(&service_);
    builder.RegisterService(&node_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto listener = rpc::ClusterListener::Start("127.0.0.1", 0, kToken, server_.get(), 500ms);
    ASSERT_TRUE(listener.ok()) << listener.status().ToString();
    listener_ = std::move(*listener);
    port_ = listener_->port();
    ASSERT_GT(port_, 0);
    target_ = "127.0.0.1:" + std::to_string(port_);
  }
  void TearDown() override {
    listener_.reset();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  static rpc::RegisterNodeRequest Join(const NodeId& id) {
    rpc::RegisterNodeRequest req;
    req.set_protocol_version(rpc::kProtocolVersion);
    req.mutable_node()->set_node_id(id.Binary());
    req.mutable_node()->set_ip("127.0.0.1");
    req.mutable_node()->set_port(7000);
    return req;
  }

  // Whether the server still answers a call with the right token.
  bool StillServes() {
    RemoteControl control(target_, kToken, 5000ms);
    rpc::ListNodesReply reply;
    return control.ListNodes(&reply).ok();
  }

  // Connects a raw TCP socket to `ip`:port_, or returns -1.
  int RawConnect(const char* ip) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    ::inet_pton(AF_INET, ip, &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // Sends `bytes`, then reads until the server closes (or 5 s pass); true if it closed.
  bool SendAndExpectClose(const std::string& bytes) {
    int fd = RawConnect("127.0.0.1");
    if (fd < 0) return false;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)!::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    char buf[4096];
    bool closed = false;
    for (int i = 0; i < 1000; ++i) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        closed = true;
        break;
      }
      if (n < 0) break;  // timed out
    }
    ::close(fd);
    return closed;
  }

  NodeTable table_{NodeTable::Options()};
  JobTable jobs_;
  KvTable kv_;
  ControlServer service_{table_, jobs_, kv_};
  NodeServer node_{std::string(NodeId::kSize, 'n'), nullptr};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<rpc::ClusterListener> listener_;
  int port_ = 0;
  std::string target_;
};

TEST_F(ClusterRpcTest, ANodeJoinsReportsAndIsListed) {
  RemoteControl control(target_, kToken, 5000ms);
  NodeId id = RandomUniqueId();
  rpc::RegisterNodeReply joined;
  ASSERT_TRUE(control.Register(Join(id), &joined).ok());
  EXPECT_EQ(joined.heartbeat_period_ms(), 500);
  rpc::HeartbeatRequest beat;
  beat.set_node_id(id.Binary());
  rpc::HeartbeatReply reply;
  ASSERT_TRUE(control.Heartbeat(beat, &reply).ok());
  EXPECT_TRUE(reply.known());
  ASSERT_EQ(reply.nodes_size(), 1);
  rpc::ListNodesReply list;
  ASSERT_TRUE(control.ListNodes(&list).ok());
  ASSERT_EQ(list.nodes_size(), 1);
  EXPECT_EQ(list.nodes(0).node_id(), id.Binary());
  // The table's own refusals come back with their code and message.
  Status again = control.Register(Join(id), &joined);
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists) << again.ToString();
  EXPECT_NE(again.message().find("already in the cluster"), std::string::npos);
}

TEST_F(ClusterRpcTest, AWrongTokenIsRefusedWithWhyAndChangesNothing) {
  RemoteControl wrong(target_, "not-the-token", 5000ms);
  rpc::RegisterNodeReply reply;
  Status st = wrong.Register(Join(RandomUniqueId()), &reply);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_NE(st.message().find("a wrong cluster token"), std::string::npos) << st.message();
  EXPECT_TRUE(table_.Nodes().empty());
  EXPECT_EQ(listener_->refused(), 1u);
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, GrpcWithoutTheHandshakeIsRefused) {
  // A plain gRPC client (no handshake): its HTTP/2 preface is not a handshake.
  auto stub = rpc::ControlService::NewStub(
      grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  rpc::ListNodesReply list;
  grpc::Status gs = stub->ListNodes(&ctx, rpc::ListNodesRequest(), &list);
  EXPECT_FALSE(gs.ok());
  EXPECT_EQ(list.nodes_size(), 0);
  EXPECT_GE(listener_->refused(), 1u);
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, AnotherProtocolVersionIsRefusedWithWhy) {
  // A handshake by hand: "PRSM", the length, a ClusterHello of another version.
  rpc::ClusterHello hello;
  hello.set_protocol_version(rpc::kProtocolVersion + 7);
  hello.set_cluster_token(kToken);
  std::string body = hello.SerializeAsString();
  std::string frame = "PRSM";
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<char>((body.size() >> (8 * i)) & 0xff));
  frame += body;
  int fd = RawConnect("127.0.0.1");
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(frame.size()));
  std::string answer;
  char buf[512];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) answer.append(buf, static_cast<size_t>(n));
  ::close(fd);
  ASSERT_GT(answer.size(), 8u);
  rpc::ClusterWelcome welcome;
  ASSERT_TRUE(welcome.ParseFromString(answer.substr(8)));
  EXPECT_FALSE(welcome.accepted());
  EXPECT_NE(welcome.reason().find("same prism version"), std::string::npos) << welcome.reason();
}

TEST_F(ClusterRpcTest, AHugeHandshakeIsRefusedBeforeItIsRead) {
  // A length prefix of 1 GiB: closed at the header, the bytes after it never read.
  std::string frame = std::string("PRSM") + std::string("\x00\x00\x00\x40", 4);
  EXPECT_TRUE(SendAndExpectClose(frame + std::string(1 << 20, 'x')));
  // 64 KiB + 1: one byte over the limit.
  uint32_t over = rpc::kMaxHandshakeBytes + 1;
  std::string just_over = "PRSM";
  for (int i = 0; i < 4; ++i) just_over.push_back(static_cast<char>((over >> (8 * i)) & 0xff));
  EXPECT_TRUE(SendAndExpectClose(just_over));
  EXPECT_GE(listener_->refused(), 2u);
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, ASilentConnectionIsClosedAfterTheHandshakeTimeout) {
  int fd = RawConnect("127.0.0.1");
  ASSERT_GE(fd, 0);
  auto start = std::chrono::steady_clock::now();
  char c;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);  // closed by the listener (500 ms in this test)
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  ::close(fd);
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, CallsWithHugeHeadersLeaveTheServerServing) {
  // 64 KiB of headers, over the server's limit (gRPC 1.51 refuses them or drops the excess,
  // depending on how they arrive); either way the server goes on serving.
  rpc::ClusterChannel channel(target_, kToken);
  auto ch = channel.Get(5000ms);
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  auto stub = rpc::NodeService::NewStub(*ch);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ctx.AddMetadata("filler", std::string(rpc::kMaxHeaderBytes * 4, 'h'));
    rpc::PingReply pong;
    (void)stub->Ping(&ctx, rpc::PingRequest(), &pong);
  }
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, ThePingAnswersWithTheNodesId) {
  rpc::ClusterChannel channel(target_, kToken);
  auto ch = channel.Get(5000ms);
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  auto stub = rpc::NodeService::NewStub(*ch);
  grpc::ClientContext ctx;
  rpc::PingReply pong;
  ASSERT_TRUE(stub->Ping(&ctx, rpc::PingRequest(), &pong).ok());
  EXPECT_EQ(pong.node_id(), std::string(NodeId::kSize, 'n'));
}

TEST_F(ClusterRpcTest, HostileBytesCloseThatConnectionOnly) {
  // Garbage instead of the handshake.
  EXPECT_TRUE(SendAndExpectClose(std::string(1 << 20, '\x7f')));
  // A well-framed handshake whose body is not a ClusterHello.
  EXPECT_TRUE(SendAndExpectClose(std::string("PRSM\x05\x00\x00\x00\xff\xff\xff\xff\xff", 13)));
  // Half a header, then the connection ends.
  int fd = RawConnect("127.0.0.1");
  ASSERT_GE(fd, 0);
  (void)!::send(fd, "PRS", 3, MSG_NOSIGNAL);
  ::close(fd);
  // After a good handshake, HTTP/2 garbage: gRPC closes that connection.
  auto good = rpc::ConnectToCluster(target_, kToken, 5000ms);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  std::string junk(64 << 10, '\x01');
  (void)!::send(*good, junk.data(), junk.size(), MSG_NOSIGNAL);
  char buf[4096];
  bool closed = false;
  for (int i = 0; i < 5000 && !closed; ++i) {
    pollfd p{*good, POLLIN, 0};
    if (::poll(&p, 1, 10) <= 0) continue;
    ssize_t n = ::recv(*good, buf, sizeof(buf), 0);
    closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  }
  ::close(*good);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(StillServes());
}

TEST_F(ClusterRpcTest, TheServerListensOnItsAddressOnlyAndOwnsItsPort) {
  // 127.0.0.2 is this machine too, but not the address the server was given.
  int fd = RawConnect("127.0.0.2");
  EXPECT_LT(fd, 0) << "the server accepted on an address it was not given";
  if (fd >= 0) ::close(fd);
  // A second listener cannot share the port.
  auto second = rpc::ClusterListener::Start("127.0.0.1", port_, kToken, server_.get());
  EXPECT_FALSE(second.ok()) << "two listeners on one port";
  // Nor listen on an address that is not this machine's.
  auto foreign = rpc::ClusterListener::Start("192.0.2.1", 0, kToken, server_.get());
  EXPECT_FALSE(foreign.ok());
  EXPECT_FALSE(rpc::ClusterListener::Start("not-an-ip", 0, kToken, server_.get()).ok());
}

TEST_F(ClusterRpcTest, TheClientReconnectsAfterThePortComesBack) {
  RemoteControl control(target_, kToken, 2000ms);
  rpc::ListNodesReply list;
  ASSERT_TRUE(control.ListNodes(&list).ok());
  // The node goes away (its listener and server), then comes back on the same port.
  listener_.reset();
  server_->Shutdown(std::chrono::system_clock::now());
  server_.reset();
  Status down = control.ListNodes(&list);
  EXPECT_EQ(down.code(), StatusCode::kUnavailable) << down.ToString();
  grpc::ServerBuilder builder;
  rpc::ConfigureClusterServer(builder);
  ControlServer service(table_, jobs_, kv_);
  builder.RegisterService(&service);
  server_ = builder.BuildAndStart();
  auto listener = rpc::ClusterListener::Start("127.0.0.1", port_, kToken, server_.get());
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  listener_ = std::move(*listener);
  EXPECT_TRUE(control.ListNodes(&list).ok());
  listener_.reset();
  server_->Shutdown(std::chrono::system_clock::now());
  server_.reset();
}

TEST_F(ClusterRpcTest, JobsAreRegisteredFoundListedAndFinished) {
  RemoteControl control(target_, kToken, 5000ms);
  rpc::JobInfo job;
  job.set_job_id(JobIdFromInt(0x00020001).Binary());
  job.set_driver_pid(4242);
  job.set_executable("/opt/app/driver");
  job.add_argv("driver");
  job.add_argv("--flag");
  job.add_env("A=1");
  ASSERT_TRUE(control.RegisterJob(job).ok());
  ASSERT_TRUE(control.RegisterJob(job).ok());  // a retried registration is harmless
  auto found = control.GetJob(JobIdFromInt(0x00020001));
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->executable(), "/opt/app/driver");
  EXPECT_EQ(found->argv_size(), 2);
  EXPECT_EQ(found->state(), rpc::JOB_RUNNING);
  EXPECT_GT(found->start_unix_ms(), 0);
  ASSERT_TRUE(control.FinishJob(JobIdFromInt(0x00020001)).ok());
  rpc::ListJobsReply list;
  ASSERT_TRUE(control.ListJobs(&list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  EXPECT_EQ(list.jobs(0).state(), rpc::JOB_FINISHED);
  EXPECT_GE(list.jobs(0).end_unix_ms(), list.jobs(0).start_unix_ms());
  // Refusals come back with their codes.
  EXPECT_EQ(control.GetJob(JobIdFromInt(7)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(control.FinishJob(JobIdFromInt(7)).code(), StatusCode::kNotFound);
  rpc::JobInfo bad;
  bad.set_job_id("xy");
  EXPECT_EQ(control.RegisterJob(bad).code(), StatusCode::kInvalidArgument);
  rpc::JobInfo other = job;
  other.set_driver_pid(1);  // another driver claiming the same id
  EXPECT_EQ(control.RegisterJob(other).code(), StatusCode::kAlreadyExists);
}

TEST_F(ClusterRpcTest, TheKeyValueTableAnswersOverGrpc) {
  RemoteControl control(target_, kToken, 5000ms);
  rpc::KvRequest put;
  put.set_request_id(7);
  put.set_op(rpc::KvRequest::PUT);
  put.set_ns("fun");
  put.set_key("f1");
  put.set_value(std::string("\0bytes\xff", 7));
  auto r = control.Apply(put);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->request_id(), 7u);
  EXPECT_FALSE(r->found());
  rpc::KvRequest get = put;
  get.set_op(rpc::KvRequest::GET);
  get.clear_value();
  r = control.Apply(get);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->found());
  EXPECT_EQ(r->value(), std::string("\0bytes\xff", 7));
  EXPECT_EQ(kv_.size(), 1u);  // the head's own table
  rpc::KvRequest bad = get;
  bad.set_op(static_cast<rpc::KvRequest::Op>(9));
  EXPECT_EQ(control.Apply(bad).status().code(), StatusCode::kInvalidArgument);
  rpc::KvRequest del = get;
  del.set_op(rpc::KvRequest::DELETE);
  ASSERT_TRUE(control.Apply(del).ok());
  EXPECT_EQ(kv_.size(), 0u);
}

TEST(JobTableTest, OnlyTheNewestFinishedJobsAreKept) {
  JobTable table(/*max_finished_kept=*/2);
  for (uint32_t i = 1; i <= 4; ++i) {
    rpc::JobInfo job;
    job.set_job_id(JobIdFromInt(i).Binary());
    job.set_driver_pid(static_cast<int>(i));
    ASSERT_TRUE(table.RegisterJob(job).ok());
  }
  rpc::JobInfo running;
  running.set_job_id(JobIdFromInt(5).Binary());
  ASSERT_TRUE(table.RegisterJob(running).ok());
  for (uint32_t i = 1; i <= 4; ++i) ASSERT_TRUE(table.FinishJob(JobIdFromInt(i)).ok());
  ASSERT_TRUE(table.FinishJob(JobIdFromInt(4)).ok());  // twice: harmless
  rpc::ListJobsReply list;
  ASSERT_TRUE(table.ListJobs(&list).ok());
  ASSERT_EQ(list.jobs_size(), 3);  // jobs 3 and 4 (finished, the newest two), and 5 (running)
  EXPECT_EQ(list.jobs(0).job_id(), JobIdFromInt(3).Binary());
  EXPECT_EQ(list.jobs(1).job_id(), JobIdFromInt(4).Binary());
  EXPECT_EQ(list.jobs(2).job_id(), JobIdFromInt(5).Binary());
  EXPECT_EQ(list.jobs(2).state(), rpc::JOB_RUNNING);
  EXPECT_EQ(table.GetJob(JobIdFromInt(1)).status().code(), StatusCode::kNotFound);
}

TEST(HostPortTest, ParsesAndRejects) {
  auto v4 = rpc::ParseHostPort("10.1.2.3:6379");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "10.1.2.3");
  EXPECT_EQ(v4->port, 6379);
  EXPECT_EQ(v4->ToString(), "10.1.2.3:6379");
  auto v6 = rpc::ParseHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "[::1]:80");
  auto named = rpc::ParseHostPort("head.example:7000");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->host, "head.example");
  for (const char* bad : {"", "10.1.2.3", ":80", "10.1.2.3:", "10.1.2.3:0", "10.1.2.3:65536",
                          "10.1.2.3:80x", "::1:80", "[::1]80", "/tmp/prism-0/s-1"}) {
    EXPECT_FALSE(rpc::ParseHostPort(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace prism

#include "rpc/grpc_channel.h"

#include <fcntl.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/server_posix.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/logging.h"
#include "cluster.pb.h"
#include "rpc/frame.h"

namespace prism::rpc {
namespace {

constexpr char kMagic[4] = {'P', 'R', 'S', 'M'};
using Clock = std::chrono::steady_clock;

bool SameBytes(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// "PRSM", the length (little-endian), the message.
std::string Framed(const google::protobuf::MessageLite& msg) {
  std::string body = msg.SerializeAsString();
  std::string out(kMagic, 4);
  uint32_t n = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + body;
}

// Parses the 8-byte frame header: the body's length, or an error.
Result<uint32_t> FrameLength(const std::array<char, 8>& header) {
  if (std::memcmp(header.data(), kMagic, 4) != 0) {
    return Status::ProtocolError("not a prism cluster handshake");
  }
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= uint32_t(static_cast<unsigned char>(header[4 + i])) << (8 * i);
  if (n > kMaxHandshakeBytes) {
    return Status::ProtocolError("a handshake of " + std::to_string(n) + " bytes (at most " +
                                 std::to_string(kMaxHandshakeBytes) + ")");
  }
  return n;
}

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Blocking I/O on a socket, bounded by `deadline`.
Status WriteAll(int fd, const std::string& bytes, Clock::time_point deadline) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, RemainingMs(deadline)) <= 0)
        return Status::Timeout("sending the handshake");
      continue;
    }
    return Status::IOError(std::string("sending the handshake: ") + std::strerror(errno));
  }
  return Status::OK();
}

Status ReadExactly(int fd, char* out, size_t size, Clock::time_point deadline) {
  size_t done = 0;
  while (done < size) {
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, RemainingMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return Status::Timeout("no answer to the handshake");
    ssize_t n = ::recv(fd, out + done, size - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    return Status::Unavailable(n == 0
                                   ? "the peer closed the connection during the handshake"
                                   : std::string("reading the handshake: ") + std::strerror(errno));
  }
  return Status::OK();
}

// A non-blocking connect to one address, finished within `deadline`.
Result<int> ConnectOnce(const addrinfo& ai, Clock::time_point deadline) {
  int fd = ::socket(ai.ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, ai.ai_addr, ai.ai_addrlen) != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    return Status::Unavailable(std::strerror(err));
  }
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, RemainingMs(deadline)) <= 0) {
    ::close(fd);
    return Status::Timeout("connecting timed out");
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    ::close(fd);
    return Status::Unavailable(std::strerror(err));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

grpc::ChannelArguments ClientArgs() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxClusterMessageBytes);
  args.SetMaxSendMessageSize(kMaxClusterMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  return args;
}

}  // namespace

std::string HostPort::ToString() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(const std::string& text) {
  HostPort out;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::InvalidArgument("'" + text + "' is not an address of the form [IPv6]:PORT");
    }
    out.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return Status::InvalidArgument("'" + text + "' is not an address of the form IP:PORT");
    }
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  char* end = nullptr;
  long p = port.empty() ? 0 : std::strtol(port.c_str(), &end, 10);
  if (out.host.empty() || port.empty() || *end != '\0' || p < 1 || p > 65535) {
    return Status::InvalidArgument("'" + text + "' is not an address of the form IP:PORT " +
                                   "(a port from 1 to 65535)");
  }
  out.port = static_cast<int>(p);
  return out;
}

void ConfigureClusterServer(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxClusterMessageBytes);
  builder.SetMaxSendMessageSize(kMaxClusterMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxHeaderBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
}

ClusterListener::ClusterListener(std::string token, grpc::Server* server,
                                 std::chrono::milliseconds timeout)
    : token_(std::move(token)), server_(server), timeout_(timeout) {}

Result<std::unique_ptr<ClusterListener>> ClusterListener::Start(
    const std::string& ip, int port, std::string token, grpc::Server* server,
    std::chrono::milliseconds handshake_timeout) {
  std::unique_ptr<ClusterListener> l(
      new ClusterListener(std::move(token), server, handshake_timeout));
  asio::error_code ec;
  auto address = asio::ip::make_address(ip, ec);
  if (ec) return Status::InvalidArgument("'" + ip + "' is not an IP address");
  asio::ip::tcp::endpoint where(address, static_cast<uint16_t>(port));
  l->acceptor_.open(where.protocol(), ec);
  // SO_REUSEADDR (a restarted node takes its port back from TIME_WAIT), never SO_REUSEPORT:
  // a second node on a taken port must fail, not share it.
  if (!ec) l->acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) l->acceptor_.bind(where, ec);
  if (!ec) l->acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable("cannot listen on " + HostPort{ip, port}.ToString() + ": " +
                               ec.message());
  }
  l->port_ = l->acceptor_.local_endpoint().port();
  l->Accept();
  l->thread_ = std::thread([raw = l.get()] { raw->io_.run(); });
  return l;
}

ClusterListener::~ClusterListener() {
  asio::post(io_, [this] {
    asio::error_code ec;
    acceptor_.close(ec);
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
}

void ClusterListener::Accept() {
  acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket sock) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      Handshake(std::make_shared<asio::ip::tcp::socket>(std::move(sock)));
    } else {
      PRISM_LOG_WARN("cluster port: accept failed: {}", ec.message());
    }
    Accept();
  });
}

void ClusterListener::Handshake(std::shared_ptr<asio::ip::tcp::socket> sock) {
  struct State {
    std::array<char, 8> header{};
    std::string body;
    asio::steady_timer timer;
    std::string peer;
    explicit State(asio::io_context& io) : timer(io) {}
  };
  auto st = std::make_shared<State>(io_);
  asio::error_code ec;
  auto remote = sock->remote_endpoint(ec);
  st->peer = ec ? "?" : remote.address().to_string() + ":" + std::to_string(remote.port());
  st->timer.expires_after(timeout_);
  st->timer.async_wait([sock](const asio::error_code& e) {
    if (!e) {
      asio::error_code ignored;
      sock->close(ignored);  // too slow: whatever read is pending fails
    }
  });
  auto refuse = [this, sock, st](const std::string& why, bool answer) {
    ++refused_;
    PRISM_LOG_WARN("cluster port: refused a connection from {}: {}", st->peer, why);
    if (!answer) {
      st->timer.cancel();
      asio::error_code ignored;
      sock->close(ignored);
      return;
    }
    ClusterWelcome no;
    no.set_accepted(false);
    no.set_reason(why);
    auto bytes = std::make_shared<std::string>(Framed(no));
    asio::async_write(*sock, asio::buffer(*bytes),
                      [sock, st, bytes](const asio::error_code&, size_t) {
                        st->timer.cancel();
                        asio::error_code ignored;
                        sock->close(ignored);
                      });
  };
  asio::async_read(
      *sock, asio::buffer(st->header), [this, sock, st, refuse](const asio::error_code& e, size_t) {
        if (e) return refuse("the handshake did not arrive (" + e.message() + ")", false);
        auto length = FrameLength(st->header);
        if (!length.ok()) return refuse(length.status().message(), false);
        st->body.resize(*length);
        asio::async_read(
            *sock, asio::buffer(st->body),
            [this, sock, st, refuse](const asio::error_code& e2, size_t) {
              if (e2) return refuse("the handshake was cut short (" + e2.message() + ")", false);
              ClusterHello hello;
              if (!hello.ParseFromString(st->body)) return refuse("a malformed handshake", false);
              if (hello.protocol_version() != kProtocolVersion) {
                return refuse("protocol version " + std::to_string(hello.protocol_version()) +
                                  ", but this node speaks " + std::to_string(kProtocolVersion) +
                                  ": run the same prism version on every node",
                              true);
              }
              if (!SameBytes(hello.cluster_token(), token_)) {
                return refuse("a wrong cluster token", true);
              }
              ClusterWelcome yes;
              yes.set_accepted(true);
              auto bytes = std::make_shared<std::string>(Framed(yes));
              asio::async_write(*sock, asio::buffer(*bytes),
                                [this, sock, st, bytes](const asio::error_code& e3, size_t) {
                                  st->timer.cancel();
                                  if (e3) return;
                                  asio::error_code ignored;
                                  sock->set_option(asio::ip::tcp::no_delay(true), ignored);
                                  int fd = sock->release(ignored);
                                  if (fd < 0) return;
                                  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
                                  // gRPC owns it from here: HTTP/2 on an authenticated connection.
                                  grpc::AddInsecureChannelFromFd(server_, fd);
                                });
            });
      });
}

Result<int> ConnectToCluster(const std::string& target, const std::string& token,
                             std::chrono::milliseconds timeout, bool wait_for_listener) {
  PRISM_ASSIGN_OR_RETURN(auto where, ParseHostPort(target));
  auto deadline = Clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int gai = ::getaddrinfo(where.host.c_str(), std::to_string(where.port).c_str(), &hints, &found);
  if (gai != 0 || found == nullptr) {
    return Status::Unavailable("cannot resolve " + where.host + ": " + ::gai_strerror(gai));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, ::freeaddrinfo);
  Status last = Status::Unavailable("no address");
  while (true) {
    for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      auto fd = ConnectOnce(*ai, deadline);
      if (!fd.ok()) {
        last = fd.status();
        continue;
      }
      ClusterHello hello;
      hello.set_protocol_version(kProtocolVersion);
      hello.set_cluster_token(token);
      std::array<char, 8> header{};
      Status st = WriteAll(*fd, Framed(hello), deadline);
      if (st.ok()) st = ReadExactly(*fd, header.data(), header.size(), deadline);
      Result<uint32_t> length = st.ok() ? FrameLength(header) : Result<uint32_t>(st);
      std::string body;
      if (length.ok()) {
        body.resize(*length);
        st = ReadExactly(*fd, body.data(), body.size(), deadline);
      } else {
        st = length.status();
      }
      ClusterWelcome welcome;
      if (st.ok() && !welcome.ParseFromString(body))
        st = Status::ProtocolError("a malformed answer");
      if (st.ok() && !welcome.accepted()) {
        st = Status::PermissionDenied("the node at " + target + " refused: " + welcome.reason());
      }
      if (!st.ok()) {
        ::close(*fd);
        return st;
      }
      return *fd;  // non-blocking, as gRPC wants it
    }
    if (!wait_for_listener || Clock::now() + std::chrono::milliseconds(100) >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::Unavailable("cannot reach " + target + ": " + last.message());
}

ClusterChannel::ClusterChannel(std::string target, std::string token)
    : target_(std::move(target)), token_(std::move(token)) {}

Result<std::shared_ptr<grpc::Channel>> ClusterChannel::Get(std::chrono::milliseconds timeout,
                                                           bool wait_for_listener) {
  MutexLock lock(mu_);
  if (channel_) return channel_;
  PRISM_ASSIGN_OR_RETURN(int fd, ConnectToCluster(target_, token_, timeout, wait_for_listener));
  channel_ = grpc::CreateCustomInsecureChannelFromFd(target_, fd, ClientArgs());
  return channel_;
}

void ClusterChannel::Reset() {
  MutexLock lock(mu_);
  channel_.reset();
}

Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  std::string m = what + ": " + s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Status::InvalidArgument(m);
    case grpc::StatusCode::NOT_FOUND:
      return Status::NotFound(m);
    case grpc::StatusCode::ALREADY_EXISTS:
      return Status::AlreadyExists(m);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Status::Timeout(m);
    case grpc::StatusCode::CANCELLED:
      return Status::Cancelled(m);
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return Status::PermissionDenied(m);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return Status::ProtocolError(m);
    case grpc::StatusCode::UNAVAILABLE:
      return Status::Unavailable(m);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Status::OutOfMemory(m);
    default:
      return Status::Internal(m);
  }
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case StatusCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    case StatusCode::kAlreadyExists:
      code = grpc::StatusCode::ALREADY_EXISTS;
      break;
    case StatusCode::kTimeout:
      code = grpc::StatusCode::DEADLINE_EXCEEDED;
      break;
    case StatusCode::kCancelled:
      code = grpc::StatusCode::CANCELLED;
      break;
    case StatusCode::kPermissionDenied:
      code = grpc::StatusCode::PERMISSION_DENIED;
      break;
    case StatusCode::kProtocolError:
      code = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case StatusCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    case StatusCode::kOutOfMemory:
      code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      break;
    default:
      break;
  }
  return grpc::Status(code, s.message());
}

}  // namespace prism::rpc

#include "rpc/blocking_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

namespace prism::rpc {

BlockingClient::~BlockingClient() {
  Close();
  if (received_fd_ >= 0) ::close(received_fd_);
}

BlockingClient::BlockingClient(BlockingClient&& o) noexcept
    : fd_(o.fd_), received_fd_(o.received_fd_), decoder_(std::move(o.decoder_)) {
  o.fd_ = -1;
  o.received_fd_ = -1;
}

BlockingClient& BlockingClient::operator=(BlockingClient&& o) noexcept {
  if (this != &o) {
    Close();
    if (received_fd_ >= 0) ::close(received_fd_);
    fd_ = o.fd_;
    received_fd_ = o.received_fd_;
    decoder_ = std::move(o.decoder_);
    o.fd_ = -1;
    o.received_fd_ = -1;
  }
  return *this;
}

void BlockingClient::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void BlockingClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<BlockingClient> BlockingClient::Connect(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Unavailable("cannot connect to " + socket_path + ": " + std::strerror(err));
  }
  BlockingClient c;
  c.fd_ = fd;
  return c;
}

Result<BlockingClient> BlockingClient::ConnectAndHello(const std::string& socket_path,
                                                       const Envelope& hello, Welcome* welcome,
                                                       int timeout_ms) {
  PRISM_ASSIGN_OR_RETURN(BlockingClient c, Connect(socket_path));
  PRISM_RETURN_IF_ERROR(c.Send(hello));
  PRISM_ASSIGN_OR_RETURN(Envelope reply, c.Receive(timeout_ms));
  if (reply.has_refused()) return Status::PermissionDenied(reply.refused().reason());
  if (!reply.has_welcome()) return Status::ProtocolError("expected a Welcome frame");
  if (welcome != nullptr) *welcome = reply.welcome();
  return c;
}

Status BlockingClient::Send(const Envelope& msg) {
  std::string bytes;
  AppendFrame(msg, &bytes);
  return SendRaw(bytes);
}

Status BlockingClient::SendRaw(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(std::string("send: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  return Status::OK();
}

Result<Envelope> BlockingClient::Receive(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    std::optional<Envelope> got;
    Status st = decoder_.Drain([&](Envelope& m) {
      got = std::move(m);
      return false;
    });
    if (!st.ok()) return st;
    if (got) return std::move(*got);
    int wait = -1;
    if (timeout_ms >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0)
        return Status::Timeout("no reply within " + std::to_string(timeout_ms) + " ms");
      wait = static_cast<int>(left);
    }
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Status::Timeout("no reply within " + std::to_string(timeout_ms) + " ms");
    size_t avail = 0;
    char* space = decoder_.WritableSpace(64 * 1024, &avail);
    iovec iov{space, avail};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(fd_, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm != nullptr; cm = CMSG_NXTHDR(&mh, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        int got;
        std::memcpy(&got, CMSG_DATA(cm), sizeof(int));
        if (received_fd_ >= 0) ::close(received_fd_);
        received_fd_ = got;
      }
    }
    if (n <= 0) return Status::Unavailable("connection closed by peer");
    decoder_.Commit(static_cast<size_t>(n));
  }
}

}  // namespace prism::rpc

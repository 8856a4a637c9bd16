#include "rpc/connection.h"

#include "base/logging.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <pthread.h>

#include <cerrno>
#include <cstring>
#include <optional>

namespace prism::rpc {

static constexpr size_t kReadChunk = 64 * 1024;

std::shared_ptr<Connection> Connection::Create(UnixSocket socket, size_t max_frame_bytes) {
  return std::shared_ptr<Connection>(new Connection(std::move(socket), max_frame_bytes));
}

Connection::Connection(UnixSocket socket, size_t max_frame_bytes)
    : socket_(std::move(socket)),
      io_(static_cast<asio::io_context&>(socket_.get_executor().context())),
      decoder_(max_frame_bytes) {
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer_pid_ = cred.pid;
  }
}

void Connection::Start(OnMessage on_message, OnClose on_close, std::string initial) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  asio::post(socket_.get_executor(), [self = shared_from_this(), initial = std::move(initial)] {
    if (!initial.empty() && !self->closed()) {
      size_t avail = 0;
      char* space = self->decoder_.WritableSpace(initial.size(), &avail);  // (nobody else reads yet)
      std::memcpy(space, initial.data(), initial.size());
      if (!self->Consume(initial.size())) return;
    }
    self->ReadSome();
  });
}

bool Connection::Consume(size_t n) {
  Status st;
  {
    std::lock_guard<std::mutex> lock(read_mu_);  // (uncontended without ShareReads)
    decoder_.Commit(n);
    st = DeliverLocked(nullptr, nullptr);
  }
  if (!st.ok()) CloseOnLoop(st);
  return !closed();
}

void Connection::ReadSome() {
  if (closed()) return;
  if (shared_reads_) {
    WaitReadable();
    return;
  }
  size_t available = 0;
  char* space = decoder_.WritableSpace(kReadChunk, &available);
  socket_.async_read_some(
      asio::buffer(space, available),
      [self = shared_from_this()](const asio::error_code& ec, size_t n) {
        if (self->closed()) return;
        if (ec) {
          self->CloseOnLoop(ec == asio::error::eof
                                ? Status::Unavailable("connection closed by peer")
                                : Status::IOError("read failed: " + ec.message()));
          return;
        }
        if (self->Consume(n)) self->ReadSome();
      });
}

void Connection::WaitReadable() {
  socket_.async_wait(asio::socket_base::wait_read, [self = shared_from_this()](const asio::error_code& ec) {
    if (self->closed()) return;
    if (ec) {
      self->CloseOnLoop(Status::IOError("wait for data failed: " + ec.message()));
      return;
    }
    // (Asio re-arms the descriptor when a wait starts, so bytes that came after the last read
    // found the socket empty are seen: the wait completes at once.)
    if (self->ReadShared()) self->WaitReadable();
  });
}

bool Connection::ReadShared() {
  Status failed;
  {
    // The other reader holds it while it reads: it takes what is there (the wait that follows
    // sees whatever it leaves). Waiting for the lock here would only cost both a system call.
    std::unique_lock<std::mutex> lock(read_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return true;
    while (!closed()) {
      size_t available = 0;
      char* space = decoder_.WritableSpace(kReadChunk, &available);
      ssize_t n = ::recv(socket_.native_handle(), space, available, MSG_DONTWAIT);
      if (n > 0) {
        decoder_.Commit(static_cast<size_t>(n));
        failed = DeliverLocked(nullptr, nullptr);
        if (!failed.ok()) break;
        if (static_cast<size_t>(n) < available) break;  // all there was (the next wait checks)
      } else if (n == 0) {
        failed = Status::Unavailable("connection closed by peer");
        break;
      } else if (errno != EINTR) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          failed = Status::IOError(std::string("read failed: ") + std::strerror(errno));
        }
        break;  // (EAGAIN: the other reader took it)
      }
    }
  }
  if (!failed.ok()) CloseOnLoop(std::move(failed));
  return !closed();
}

bool Connection::TryReadHere(const TakeHere& take) {
  if (!shared_reads_ || closed()) return false;
  std::unique_lock<std::mutex> lock(read_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;  // the loop reads, or runs a handler: it has this one
  size_t available = 0;
  char* space = decoder_.WritableSpace(kReadChunk, &available);
  ssize_t n;
  {
    // Under mu_: the loop closes the descriptor under it, so this never reads a descriptor
    // closed (and perhaps reused) meanwhile.
    std::unique_lock<std::mutex> open(mu_, std::try_to_lock);
    if (!open.owns_lock() || closed()) return false;
    n = ::recv(socket_.native_handle(), space, available, MSG_DONTWAIT);
  }
  if (n <= 0) return false;  // nothing yet; or the end or an error, which the loop sees too
  decoder_.Commit(static_cast<size_t>(n));
  bool took = false;
  Status st = DeliverLocked(&take, &took);
  lock.unlock();
  if (!st.ok()) Close(st);
  return took;
}

Status Connection::DeliverLocked(const TakeHere* take, bool* took) {
  return decoder_.Drain([&](Envelope& msg) {
    if (closed()) return false;
    if (handed_.load(std::memory_order_acquire) == 0) {
      if (take == nullptr) {  // the loop's own read
        on_message_(*this, msg);
        return !closed();
      }
      if ((*take)(*this, msg)) {
        *took = true;
        return true;
      }
    }
    // To the loop, behind what was handed to it before (posts run in order).
    handed_.fetch_add(1, std::memory_order_acq_rel);
    std::shared_ptr<Envelope> env = decoder_.current();
    if (!env) env = std::make_shared<Envelope>(std::move(msg));
    asio::post(io_, [self = shared_from_this(), env = std::move(env)] { self->DeliverHanded(env); });
    return true;
  });
}

void Connection::DeliverHanded(const std::shared_ptr<Envelope>& msg) {
  if (!closed() && on_message_) {
    handed_frame_ = msg;
    on_message_(*this, *msg);
    handed_frame_.reset();
  }
  handed_.fetch_sub(1, std::memory_order_acq_rel);
}

std::shared_ptr<Envelope> Connection::HoldFrame() {
  // A handed frame runs on the loop without read_mu_, while the decoder may be delivering the
  // next ones to the other reader; every other handler runs under read_mu_.
  if (InLoop() && handed_frame_) return handed_frame_;  // (handed_frame_ is the loop's alone)
  return decoder_.current();
}

void Connection::Send(const Envelope& msg) { Queue(&msg, {}, /*write_here=*/true); }

void Connection::SendBatched(const Envelope& msg) { Queue(&msg, {}, /*write_here=*/false); }

void Connection::SendFrame(std::string_view frame) { Queue(nullptr, frame, /*write_here=*/true); }

void Connection::Queue(const Envelope* msg, std::string_view frame, bool write_here) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Under mu_: CloseOnLoop closes the descriptor under it too, so the fast path below never
    // writes to a descriptor that was closed (and perhaps reused) meanwhile.
    if (closed()) return;
    size_t start = pending_.size();
    if (msg != nullptr) {
      AppendFrame(*msg, &pending_);
    } else {
      pending_.append(frame);
    }
    if (writing_) return;  // the write in flight picks it up
    if (write_here && start == 0 && !InLoop()) {
      // Fast path off the loop thread: nothing queued, so write straight from this thread and
      // spare a wake-up of the loop. The kernel keeps concurrent reads (the loop thread) and
      // this write apart; mu_ orders the writers. (On the loop thread async_write batches.)
      ssize_t n = ::send(socket_.native_handle(), pending_.data(), pending_.size(),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n == static_cast<ssize_t>(pending_.size())) {
        pending_.clear();
        return;
      }
      if (n > 0) pending_.erase(0, static_cast<size_t>(n));
    }
    writing_ = true;
  }
  if (InLoop()) {
    WriteLoop();
  } else {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->WriteLoop(); });
  }
}

Status Connection::SendWithFd(const Envelope& msg, int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed()) return Status::Unavailable("connection closed");
  if (writing_ || !pending_.empty()) {
    return Status::Internal("a descriptor can only be sent on an idle connection");
  }
  std::string frame;
  AppendFrame(msg, &frame);
  iovec iov{frame.data(), frame.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  cmsghdr* cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(socket_.native_handle(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return Status::IOError(std::string("sendmsg: ") + std::strerror(errno));
  if (static_cast<size_t>(n) < frame.size()) {
    // The descriptor went with the first byte; the rest follows as an ordinary write.
    pending_.assign(frame, static_cast<size_t>(n), std::string::npos);
    writing_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->WriteLoop(); });
  }
  return Status::OK();
}

void Connection::WriteLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.empty() || closed()) {
      writing_ = false;
      return;
    }
    inflight_.clear();
    inflight_.swap(pending_);
  }
  asio::async_write(socket_, asio::buffer(inflight_),
                    [self = shared_from_this()](const asio::error_code& ec, size_t) {
                      if (ec) {
                        {
                          std::lock_guard<std::mutex> lock(self->mu_);
                          self->writing_ = false;
                        }
                        self->CloseOnLoop(Status::IOError("write failed: " + ec.message()));
                        return;
                      }
                      self->WriteLoop();
                    });
}

void Connection::Close(Status reason) {
  if (InLoop()) {
    CloseOnLoop(std::move(reason));
  } else {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), r = std::move(reason)]() mutable {
                 self->CloseOnLoop(std::move(r));
               });
  }
}

void Connection::CloseOnLoop(Status reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_.exchange(true)) return;
    asio::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
  }
  if (on_close_) {
    auto cb = std::move(on_close_);
    on_message_ = nullptr;
    cb(*this, reason);
  }
}

EventLoop::EventLoop() : work_(asio::make_work_guard(io_)) {}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Start(const std::string& thread_name) {
  thread_ = std::thread([this, thread_name] {
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    io_.run();
  });
}

void EventLoop::Stop() {
  work_.reset();
  io_.stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

Result<std::unique_ptr<asio::local::stream_protocol::acceptor>> Listen(asio::io_context& io,
                                                                      const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("socket path too long (" + std::to_string(path.size()) +
                                   " bytes, the limit is " +
                                   std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                   "): " + path + "; set PRISM_TMPDIR to a shorter folder");
  }
  ::unlink(path.c_str());
  auto acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(io);
  asio::error_code ec;
  asio::local::stream_protocol::endpoint ep(path);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IOError("cannot listen on " + path + ": " + ec.message());
  return acceptor;
}

namespace {

struct PendingConnect : std::enable_shared_from_this<PendingConnect> {
  PendingConnect(asio::io_context& io, std::function<void(Result<Connected>)> d)
      : socket(io), timer(io), decoder(kDefaultMaxFrameBytes), done(std::move(d)) {}
  UnixSocket socket;
  asio::steady_timer timer;
  FrameDecoder decoder;
  std::string hello;
  std::function<void(Result<Connected>)> done;
  bool finished = false;

  void Finish(Result<Connected> r) {
    if (finished) return;
    finished = true;
    asio::error_code ignored;
    timer.cancel(ignored);
    if (!r.ok()) socket.close(ignored);
    auto cb = std::move(done);
    cb(std::move(r));
  }
  void ReadWelcome() {
    auto self = shared_from_this();
    size_t avail = 0;
    char* space = decoder.WritableSpace(4096, &avail);
    socket.async_read_some(asio::buffer(space, avail), [self](const asio::error_code& ec, size_t n) {
      if (self->finished) return;
      if (ec) {
        self->Finish(Status::Unavailable("connection closed during the handshake: " + ec.message()));
        return;
      }
      self->decoder.Commit(n);
      std::optional<Envelope> got;
      Status st = self->decoder.Drain([&](Envelope& m) {
        got = std::move(m);
        return false;
      });
      if (!st.ok()) return self->Finish(st);
      if (!got) return self->ReadWelcome();
      if (got->has_refused()) return self->Finish(Status::PermissionDenied(got->refused().reason()));
      if (!got->has_welcome()) return self->Finish(Status::ProtocolError("expected a Welcome frame"));
      Connected c{std::move(self->socket), got->welcome(), self->decoder.TakePending()};
      self->Finish(std::move(c));
    });
  }
};

}  // namespace

void AsyncConnectAndHello(asio::io_context& io, const std::string& path, const Envelope& hello,
                          std::chrono::milliseconds timeout,
                          std::function<void(Result<Connected>)> done) {
  auto p = std::make_shared<PendingConnect>(io, std::move(done));
  AppendFrame(hello, &p->hello);
  p->timer.expires_after(timeout);
  p->timer.async_wait([p, timeout](const asio::error_code& ec) {
    if (ec) return;
    p->Finish(Status::Timeout("no Welcome within " + std::to_string(timeout.count()) + " ms"));
  });
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    asio::post(io, [p, path] { p->Finish(Status::InvalidArgument("socket path too long: " + path)); });
    return;
  }
  p->socket.async_connect(asio::local::stream_protocol::endpoint(path),
                          [p, path](const asio::error_code& ec) {
                            if (p->finished) return;
                            if (ec) {
                              p->Finish(Status::Unavailable("cannot connect to " + path + ": " + ec.message()));
                              return;
                            }
                            asio::async_write(p->socket, asio::buffer(p->hello),
                                              [p](const asio::error_code& wec, size_t) {
                                                if (p->finished) return;
                                                if (wec) {
                                                  p->Finish(Status::Unavailable("cannot send Hello: " + wec.message()));
                                                  return;
                                                }
                                                p->ReadWelcome();
                                              });
                          });
}

Envelope MakeHello(Role role, const std::string& token) {
  Envelope env;
  Hello* hello = env.mutable_hello();
  hello->set_protocol_version(kProtocolVersion);
  hello->set_cluster_token(token);
  hello->set_role(role);
  hello->set_pid(getpid());
  return env;
}

Status CheckHello(const Hello& hello, const std::string& token) {
  if (hello.protocol_version() != kProtocolVersion) {
    return Status::ProtocolError("protocol version " + std::to_string(hello.protocol_version()) +
                                 " is not supported; this prism speaks version " +
                                 std::to_string(kProtocolVersion));
  }
  if (hello.cluster_token() != token) {
    return Status::PermissionDenied("wrong cluster token");
  }
  return Status::OK();
}

}  // namespace prism::rpc

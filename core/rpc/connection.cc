#include "rpc/connection.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "base/logging.h"
#include "base/mutex.h"

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

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);  // (the socket object and the watch close their own)
}

void Connection::Start(OnMessage on_message, OnClose on_close, std::string initial) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  if (shared_reads_) {
    // Out of the reactor (which would wake the loop for every frame, read by whoever), into an
    // epoll set of its own: level-triggered there, and what it reports is ours to choose.
    asio::error_code ec;
    const int fd = socket_.release(ec);
    const int ep = ec ? -1 : ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      // (Out of descriptors, say.) The connection fails like any other; nothing was read.
      const std::string why = ec ? ec.message() : std::string(std::strerror(errno));
      if (ep >= 0) ::close(ep);
      if (fd >= 0) ::close(fd);
      closed_.store(true, std::memory_order_release);
      asio::post(io_, [self = shared_from_this(), why] {
        if (auto cb = std::move(self->on_close_)) {
          self->on_message_ = nullptr;
          cb(*self, Status::IOError("cannot watch the connection: " + why));
        }
      });
      return;
    }
    fd_ = fd;
    watch_ = std::make_unique<asio::posix::stream_descriptor>(io_, ep);
  }
  asio::post(socket_.get_executor(), [self = shared_from_this(), initial = std::move(initial)] {
    if (!initial.empty() && !self->closed()) {
      size_t avail = 0;
      char* space =
          self->decoder_.WritableSpace(initial.size(), &avail);  // (nobody else reads yet)
      std::memcpy(space, initial.data(), initial.size());
      if (!self->Consume(initial.size())) return;
    }
    self->ReadSome();
  });
}

bool Connection::Consume(size_t n) {
  Status st;
  {
    MutexLock lock(read_mu_);  // (uncontended without ShareReads)
    decoder_.Commit(n);
    st = DeliverLocked(nullptr, nullptr);
  }
  if (!st.ok()) CloseOnLoop(st);
  return !closed();
}

void Connection::ReadSome() {
  if (closed()) return;
  if (shared_reads_) {
    WaitShared();
    return;
  }
  size_t available = 0;
  char* space = decoder_.WritableSpace(kReadChunk, &available);
  socket_.async_read_some(asio::buffer(space, available), [self = shared_from_this()](
                                                              const asio::error_code& ec,
                                                              size_t n) {
    if (self->closed()) return;
    if (ec) {
      self->CloseOnLoop(ec == asio::error::eof ? Status::Unavailable("connection closed by peer")
                                               : Status::IOError("read failed: " + ec.message()));
      return;
    }
    if (self->Consume(n)) self->ReadSome();
  });
}

void Connection::WaitShared() {
  watch_->async_wait(asio::posix::stream_descriptor::wait_read, [self = shared_from_this()](
                                                                    const asio::error_code& ec) {
    if (self->closed()) return;
    if (ec) {
      self->CloseOnLoop(Status::IOError("wait for the connection failed: " + ec.message()));
      return;
    }
    self->OnSharedReady();
  });
}

void Connection::OnSharedReady() {
  bool write;
  {
    MutexLock lock(interest_mu_);
    write = want_write_;
  }
  if (write) WriteShared();
  if (closed()) return;
  // Read even while claimed: the set then reports only hang-ups, errors and room to write, and
  // a hang-up is seen here at once (frames read here go to the loop, in order, as ever).
  if (ReadShared()) WaitShared();
}

void Connection::SetInterestLocked() {
  if (fds_closed_ || fd_ < 0) return;
  epoll_event ev{};
  uint32_t events = 0;
  if (claims_ == 0) events |= EPOLLIN | EPOLLRDHUP;
  if (want_write_) events |= EPOLLOUT;
  ev.events = events;
  ev.data.fd = fd_;
  (void)::epoll_ctl(watch_->native_handle(), EPOLL_CTL_MOD, fd_, &ev);
}

void Connection::ClaimReads() {
  if (!shared_reads_) return;
  MutexLock lock(interest_mu_);
  if (claims_++ == 0) SetInterestLocked();
}

void Connection::ReleaseReads() {
  if (!shared_reads_) return;
  MutexLock lock(interest_mu_);
  if (claims_ > 0 && --claims_ == 0) SetInterestLocked();  // (bytes waiting: the loop wakes)
}

bool Connection::ReadShared() {
  Status failed;
  {
    // The other reader holds it while it reads: it takes what is there (the wait that follows
    // sees whatever it leaves). Waiting for the lock here would only cost both a system call.
    UniqueLock lock(read_mu_, std::defer_lock);
    if (!lock.try_lock()) return true;
    while (!closed()) {
      size_t available = 0;
      char* space = decoder_.WritableSpace(kReadChunk, &available);
      ssize_t n = ::recv(Fd(), space, available, MSG_DONTWAIT);
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
  UniqueLock lock(read_mu_, std::defer_lock);
  if (!lock.try_lock()) return false;  // the loop reads, or runs a handler: it has this one
  size_t available = 0;
  char* space = decoder_.WritableSpace(kReadChunk, &available);
  ssize_t n;
  {
    // Under mu_: the loop closes the descriptor under it, so this never reads a descriptor
    // closed (and perhaps reused) meanwhile.
    UniqueLock open(mu_, std::defer_lock);
    if (!open.try_lock()) return false;
    if (closed()) return false;
    n = ::recv(Fd(), space, available, MSG_DONTWAIT);
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
    asio::post(io_,
               [self = shared_from_this(), env = std::move(env)] { self->DeliverHanded(env); });
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
    MutexLock lock(mu_);
    // Under mu_: CloseOnLoop closes the descriptor under it too, so the fast path below never
    // writes to a descriptor that was closed (and perhaps reused) meanwhile.
    if (closed()) return;
    frames_queued_.store(frames_queued_.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
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
      ssize_t n = ::send(Fd(), pending_.data(), pending_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n == static_cast<ssize_t>(pending_.size())) {
        pending_.clear();
        return;
      }
      if (n > 0) pending_.erase(0, static_cast<size_t>(n));
    }
    writing_ = true;
  }
  // On the loop, a descriptor of our own (ShareReads) is written by a write posted behind the
  // handler that queued the frame, with all the handler queued after it: a pipeline's tasks
  // leave in one system call, not one each. (Asio's own writes batch what is queued while one is
  // in flight; Close sends what is still queued.)
  if (InLoop() && fd_ < 0) {
    WriteLoop();
  } else {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->WriteLoop(); });
  }
}

Status Connection::SendWithFd(const Envelope& msg, int fd) {
  MutexLock lock(mu_);
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
    n = ::sendmsg(Fd(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
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
  if (shared_reads_ && fd_ >= 0) {
    WriteShared();
    return;
  }
  {
    MutexLock lock(mu_);
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
                          MutexLock lock(self->mu_);
                          self->writing_ = false;
                        }
                        self->CloseOnLoop(Status::IOError("write failed: " + ec.message()));
                        return;
                      }
                      self->WriteLoop();
                    });
}

void Connection::WriteShared() {
  // On the loop, which alone closes the descriptor; inflight_ is this write's alone (as Asio's
  // buffer is), so the system calls run without mu_, and other threads queue meanwhile.
  bool wrote = false;
  while (true) {
    {
      MutexLock lock(mu_);
      if (closed()) return;
      if (inflight_sent_ == inflight_.size()) {
        inflight_.clear();
        inflight_sent_ = 0;
        if (pending_.empty()) {
          {
            MutexLock interest(interest_mu_);
            if (want_write_) {
              want_write_ = false;
              SetInterestLocked();
            }
          }
          if (!wrote) {
            writing_ = false;
            return;
          }
          // As Asio's write, which completes on a later turn of the loop: the write stays "in
          // flight" until then, so the frames queued meanwhile (replies of a pipeline) go
          // together in the next write instead of one system call (and wake-up) each.
          asio::post(io_, [self = shared_from_this()] { self->WriteShared(); });
          return;
        }
        inflight_.swap(pending_);
      }
    }
    ssize_t n = ::send(fd_, inflight_.data() + inflight_sent_, inflight_.size() - inflight_sent_,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      wrote = true;
      inflight_sent_ += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Full: the loop's wait reports room (also while the reads are claimed).
      MutexLock interest(interest_mu_);
      if (!want_write_) {
        want_write_ = true;
        SetInterestLocked();
      }
      return;
    } else {
      Status failed = Status::IOError(std::string("write failed: ") + std::strerror(errno));
      {
        MutexLock lock(mu_);
        writing_ = false;
      }
      CloseOnLoop(std::move(failed));
      return;
    }
  }
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
    MutexLock lock(mu_);
    if (closed_.exchange(true)) return;
    asio::error_code ignored;
    if (fd_ >= 0) {
      // What was queued before the close goes first, as far as the socket takes it at once (a
      // refusal sent just before closing, say).
      std::string_view rest(inflight_);
      rest.remove_prefix(std::min(inflight_sent_, inflight_.size()));
      for (std::string_view part : {rest, std::string_view(pending_)}) {
        while (!part.empty()) {
          ssize_t n = ::send(fd_, part.data(), part.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n <= 0) break;
          part.remove_prefix(static_cast<size_t>(n));
        }
        if (!part.empty()) break;
      }
      MutexLock interest(interest_mu_);
      fds_closed_ = true;
      ::shutdown(fd_, SHUT_RDWR);
      ::close(fd_);
      fd_ = -1;
      watch_->close(ignored);  // (its wait ends with an error the handler ignores: closed)
    } else {
      socket_.shutdown(asio::socket_base::shutdown_both, ignored);
      socket_.close(ignored);
    }
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
    socket.async_read_some(
        asio::buffer(space, avail), [self](const asio::error_code& ec, size_t n) {
          if (self->finished) return;
          if (ec) {
            self->Finish(
                Status::Unavailable("connection closed during the handshake: " + ec.message()));
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
          if (got->has_refused())
            return self->Finish(Status::PermissionDenied(got->refused().reason()));
          if (!got->has_welcome())
            return self->Finish(Status::ProtocolError("expected a Welcome frame"));
          Connected c{std::move(self->socket), got->welcome(), self->decoder.TakePending()};
          self->Finish(std::move(c));
        });
  }
};

}  // namespace

namespace {

// This process's node, for dialing (SetLocalNode).
struct LocalNode {
  Mutex mu;
  std::string node_id PRISM_GUARDED_BY(mu);
  std::string relay_socket PRISM_GUARDED_BY(mu);
};
LocalNode& Local() {
  static LocalNode* node = new LocalNode;  // never destroyed: dialing may run at exit
  return *node;
}

// Connects to `path` and sends `opening` (the Hello, after a RelayOpen when relayed).
void Dial(asio::io_context& io, const std::string& path, const Envelope* relay_open,
          const Envelope& hello, std::chrono::milliseconds timeout,
          std::function<void(Result<Connected>)> done) {
  auto p = std::make_shared<PendingConnect>(io, std::move(done));
  if (relay_open != nullptr) AppendFrame(*relay_open, &p->hello);
  AppendFrame(hello, &p->hello);
  p->timer.expires_after(timeout);
  p->timer.async_wait([p, timeout](const asio::error_code& ec) {
    if (ec) return;
    p->Finish(Status::Timeout("no Welcome within " + std::to_string(timeout.count()) + " ms"));
  });
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    asio::post(io,
               [p, path] { p->Finish(Status::InvalidArgument("socket path too long: " + path)); });
    return;
  }
  p->socket.async_connect(
      asio::local::stream_protocol::endpoint(path), [p, path](const asio::error_code& ec) {
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

}  // namespace

void SetLocalNode(const std::string& node_id, const std::string& relay_socket) {
  LocalNode& n = Local();
  MutexLock lock(n.mu);
  n.node_id = node_id;
  n.relay_socket = relay_socket;
}

bool IsRemote(const Address& target) {
  if (target.node_address().empty()) return false;
  LocalNode& n = Local();
  MutexLock lock(n.mu);
  return !n.node_id.empty() && target.node_id() != n.node_id;
}

void AsyncConnectAndHello(asio::io_context& io, const std::string& path, const Envelope& hello,
                          std::chrono::milliseconds timeout,
                          std::function<void(Result<Connected>)> done) {
  Dial(io, path, nullptr, hello, timeout, std::move(done));
}

void AsyncConnectAndHello(asio::io_context& io, const Address& target, const Envelope& hello,
                          std::chrono::milliseconds timeout,
                          std::function<void(Result<Connected>)> done) {
  if (!IsRemote(target)) {
    Dial(io, target.socket_path(), nullptr, hello, timeout, std::move(done));
    return;
  }
  std::string relay;
  {
    LocalNode& n = Local();
    MutexLock lock(n.mu);
    relay = n.relay_socket;
  }
  if (relay.empty()) {
    asio::post(io, [done = std::move(done), target] {
      done(Status::Unavailable("the process at " + target.node_address() +
                               " is on another node, and this node has no cluster port"));
    });
    return;
  }
  Envelope open;
  open.mutable_relay_open()->set_node_address(target.node_address());
  const std::string& path = target.socket_path();
  auto slash = path.rfind('/');
  open.mutable_relay_open()->set_socket_name(slash == std::string::npos ? path
                                                                        : path.substr(slash + 1));
  Dial(io, relay, &open, hello, timeout, std::move(done));
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

void SendErrorFrame(Connection& conn, uint64_t request_id, const Status& st) {
  Envelope env;
  env.mutable_error()->set_request_id(request_id);
  env.mutable_error()->set_code(static_cast<uint32_t>(st.code()));
  env.mutable_error()->set_message(st.message());
  conn.Send(env);
}

}  // namespace prism::rpc

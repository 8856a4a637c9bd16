#include "node/relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <utility>

#include "base/logging.h"
#include "rpc/frame.h"

namespace prism {

namespace {
constexpr size_t kChunkBytes = 256 << 10;
constexpr size_t kMaxRelayOpenBytes = 4096;
constexpr auto kDialTimeout = std::chrono::milliseconds(10000);
using LocalSocket = asio::local::stream_protocol::socket;

// Answers a local connection that cannot be tunnelled with Refused and closes it.
void RefuseLocal(std::shared_ptr<LocalSocket> sock, const std::string& why) {
  rpc::Envelope env;
  env.mutable_refused()->set_reason(why);
  auto bytes = std::make_shared<std::string>();
  rpc::AppendFrame(env, bytes.get());
  asio::async_write(*sock, asio::buffer(*bytes), [sock, bytes](const asio::error_code&, size_t) {
    asio::error_code ignored;
    sock->close(ignored);
  });
}

// A socket name the relay connects to: a plain name of the session folder, never a path.
bool IsSessionSocketName(const std::string& name) {
  return !name.empty() && name.size() < 100 && name.find('/') == std::string::npos &&
         name != "relay.sock" && name.front() != '.' && name.size() > 5 &&
         name.compare(name.size() - 5, 5, ".sock") == 0;
}
}  // namespace

// One tunnel's two halves: a local socket and a gRPC stream. Everything runs on the relay's
// thread, but one thing: a message read from the stream that the socket takes at once is written
// there by the gRPC thread that read it, which asks for the next message (no hop to the relay's
// thread on the way in: WriteDirect). Other reactions post to the relay's thread. Bytes read from
// the socket go out as one message (the next read waits for that write); a message read from the
// stream is written to the socket before the next read. Either side ending ends both.
class Tunnel {
 public:
  Tunnel(Relay& relay, std::shared_ptr<LocalSocket> sock)
      : relay_(relay), sock_(std::move(sock)), buf_(kChunkBytes) {
    relay_.open_++;
    if (sock_) fd_ = sock_->native_handle();
  }
  virtual ~Tunnel() { relay_.open_--; }

  /// Ends both halves (error: the stream is cancelled rather than closed). Idempotent.
  void End(bool error) {
    if (ended_) return;
    ended_ = true;
    relay_.live_.erase(this);
    {
      std::lock_guard<std::recursive_mutex> lock(direct_mu_);
      closed_ = true;  // no gRPC thread writes to the socket or reads the stream from here on
      asio::error_code ignored;
      if (sock_) sock_->close(ignored);
    }
    EndGrpc(error);
  }

 protected:
  virtual void GrpcRead(rpc::RelayChunk* into) = 0;
  virtual void GrpcWrite(const rpc::RelayChunk* out) = 0;
  virtual void EndGrpc(bool error) = 0;

  void Pump() {
    relay_.live_.insert(this);
    AllowDirect();
    ReadLocal();
    GrpcRead(&in_);
  }
  void ReadLocal() {
    sock_->async_read_some(asio::buffer(buf_), [this](const asio::error_code& ec, size_t n) {
      if (ended_) return;
      if (ec) return End(ec != asio::error::eof);
      out_.Clear();
      out_.set_data(buf_.data(), n);
      GrpcWrite(&out_);
    });
  }
  // gRPC's reactions, posted to the relay's thread.
  void Post(std::function<void()> f) { asio::post(relay_.io_, std::move(f)); }
  /// On the gRPC thread that read a message: writes it to the socket when the socket takes all
  /// of it at once and asks for the next message, returning true; otherwise leaves what is left
  /// in `in_` for the relay's thread (ReadFromGrpc), returning false.
  bool WriteDirect(bool ok) {
    if (!ok) return false;
    std::lock_guard<std::recursive_mutex> lock(direct_mu_);
    if (closed_ || fd_ < 0) return false;
    const std::string& data = in_.data();
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    received_ = true;
    if (sent < data.size()) {
      in_.mutable_data()->erase(0, sent);
      return false;
    }
    GrpcRead(&in_);
    return true;
  }
  /// The socket is connected (ServerTunnel): messages may be written to it directly.
  void AllowDirect() {
    std::lock_guard<std::recursive_mutex> lock(direct_mu_);
    if (!closed_ && sock_) fd_ = sock_->native_handle();
  }
  void WroteToGrpc(bool ok) {
    if (ended_) return;
    if (!ok) return End(true);
    ReadLocal();
  }
  void ReadFromGrpc(bool ok) {
    if (ended_) return;
    if (!ok) return RemoteEnded();
    received_ = true;
    pending_ = std::move(*in_.mutable_data());
    asio::async_write(*sock_, asio::buffer(pending_), [this](const asio::error_code& ec, size_t) {
      if (ended_) return;
      if (ec) return End(true);
      GrpcRead(&in_);
    });
  }
  virtual void RemoteEnded() { End(false); }

  Relay& relay_;
  std::shared_ptr<LocalSocket> sock_;
  std::vector<char> buf_;
  rpc::RelayChunk in_, out_;
  std::string pending_;
  bool ended_ = false;
  std::atomic<bool> received_{false};
  // WriteDirect against End: the socket's descriptor is written by a gRPC thread only while
  // open. Recursive: should gRPC run a reaction inline, it does not deadlock.
  std::recursive_mutex direct_mu_;
  bool closed_ = false;  // under direct_mu_
  int fd_ = -1;          // under direct_mu_; -1 until writes may go straight to the socket
};

// This node's end of a tunnel it opened: a gRPC client stream to the other node's relay.
class ClientTunnel final : public Tunnel,
                           public grpc::ClientBidiReactor<rpc::RelayChunk, rpc::RelayChunk> {
 public:
  ClientTunnel(Relay& relay, std::shared_ptr<LocalSocket> sock, std::string node_address,
               const std::shared_ptr<grpc::Channel>& channel, std::string socket_name,
               std::string leftover)
      : Tunnel(relay, std::move(sock)),
        node_address_(std::move(node_address)),
        stub_(rpc::NodeService::NewStub(channel)) {
    stub_->async()->Relay(&ctx_, this);
    // Until End, this side may start operations: OnDone waits for the hold.
    AddHold();
    relay_.live_.insert(this);
    first_.set_socket_name(std::move(socket_name));
    first_.set_data(std::move(leftover));
    StartWrite(&first_);  // the target; the local socket is read once it is written
    GrpcRead(&in_);
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    Post([this, ok] { WroteToGrpc(ok); });
  }
  void OnReadDone(bool ok) override {
    if (WriteDirect(ok)) return;
    Post([this, ok] { ReadFromGrpc(ok); });
  }
  void OnDone(const grpc::Status& s) override {
    Post([this, s] {
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) relay_.ForgetChannel(node_address_);
      if (!received_ && !s.ok() && sock_ && sock_->is_open()) {
        // Nothing came back: the other node could not connect. The caller hears why.
        RefuseLocal(sock_, "through node " + node_address_ + ": " + s.error_message());
      }
      // A local read may still be pending (cancelled in RemoteEnded): its handler is queued
      // before this second post, so it runs (and sees ended_) before the tunnel goes.
      Post([this] { delete this; });
    });
  }

 private:
  void GrpcRead(rpc::RelayChunk* into) override { StartRead(into); }
  void GrpcWrite(const rpc::RelayChunk* out) override { StartWrite(out); }
  void EndGrpc(bool error) override {
    if (error) {
      ctx_.TryCancel();
    } else if (!remote_ended_) {
      StartWritesDone();
    }
    RemoveHold();
  }
  void RemoteEnded() override {
    remote_ended_ = true;
    if (!received_) {
      // Keep the socket for the reason OnDone brings; stop reading it.
      ended_ = true;
      asio::error_code ignored;
      sock_->cancel(ignored);
      relay_.live_.erase(this);
      RemoveHold();
      return;
    }
    End(false);
  }

  const std::string node_address_;
  std::unique_ptr<rpc::NodeService::Stub> stub_;
  grpc::ClientContext ctx_;
  rpc::RelayChunk first_;
  bool remote_ended_ = false;
};

// The other node's end: a gRPC server stream, and a connection to a socket of this session.
class ServerTunnel final : public Tunnel,
                           public grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk> {
 public:
  explicit ServerTunnel(Relay& relay) : Tunnel(relay, nullptr) { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (WriteDirect(ok)) return;  // (only once connected: until then there is no descriptor)
    Post([this, ok] {
      if (ended_) return;  // cancelled (and finished) meanwhile
      if (!connected_) return Connect(ok);
      ReadFromGrpc(ok);
    });
  }
  void OnWriteDone(bool ok) override {
    Post([this, ok] { WroteToGrpc(ok); });
  }
  void OnCancel() override {
    Post([this] { End(true); });
  }
  void OnDone() override {
    Post([this] {
      relay_.live_.erase(this);  // (ended already: OnDone comes only after Finish)
      delete this;
    });
  }

 private:
  void Connect(bool ok) {
    if (!ok) return Refuse(grpc::Status(grpc::StatusCode::CANCELLED, "the caller left"));
    const std::string name = in_.socket_name();
    if (!IsSessionSocketName(name)) {
      return Refuse(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "'" + name.substr(0, 100) + "' is not a socket of a node"));
    }
    auto sock = std::make_shared<LocalSocket>(relay_.io_);
    asio::error_code ec;
    sock->connect(asio::local::stream_protocol::endpoint(relay_.session_dir_ + "/" + name), ec);
    if (ec) {
      // NOT_FOUND, not UNAVAILABLE: the connection between the nodes is fine.
      return Refuse(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "no process listens at " + name + " on this node"));
    }
    sock_ = std::move(sock);
    connected_ = true;
    relay_.live_.insert(this);
    if (in_.data().empty()) return Pump();
    // The caller's first bytes (its Hello) came with the target.
    pending_ = std::move(*in_.mutable_data());
    asio::async_write(*sock_, asio::buffer(pending_), [this](const asio::error_code& e, size_t) {
      if (ended_) return;
      if (e) return End(true);
      Pump();
    });
  }
  void Refuse(const grpc::Status& why) {
    if (ended_) return;
    ended_ = true;
    Finish(why);
  }
  void GrpcRead(rpc::RelayChunk* into) override { StartRead(into); }
  void GrpcWrite(const rpc::RelayChunk* out) override { StartWrite(out); }
  void EndGrpc(bool error) override {
    Finish(error ? grpc::Status(grpc::StatusCode::CANCELLED, "the tunnel broke")
                 : grpc::Status::OK);
  }

  bool connected_ = false;
};

std::string Relay::SocketPath(const std::string& session_dir) {
  return session_dir + "/relay.sock";
}

Relay::Relay(std::string session_dir, std::string token)
    : session_dir_(std::move(session_dir)), token_(std::move(token)) {}

Result<std::unique_ptr<Relay>> Relay::Start(const std::string& session_dir, std::string token) {
  std::unique_ptr<Relay> r(new Relay(session_dir, std::move(token)));
  std::string path = SocketPath(session_dir);
  ::unlink(path.c_str());
  asio::error_code ec;
  r->acceptor_.open(asio::local::stream_protocol(), ec);
  if (!ec) r->acceptor_.bind(asio::local::stream_protocol::endpoint(path), ec);
  if (!ec) r->acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IOError("cannot listen on " + path + ": " + ec.message());
  r->AcceptLocal();
  r->thread_ = std::thread([raw = r.get()] { raw->io_.run(); });
  r->dialer_ = std::thread([raw = r.get()] { raw->DialerLoop(); });
  return r;
}

Relay::~Relay() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (dialer_.joinable()) dialer_.join();
  // Every tunnel ends; each is deleted once gRPC is done with it (on this thread).
  asio::post(io_, [this] {
    asio::error_code ignored;
    acceptor_.close(ignored);
    std::set<Tunnel*> live = live_;
    for (Tunnel* t : live) t->End(true);
  });
  for (int i = 0; i < 500 && open_.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (open_.load() > 0) PRISM_LOG_WARN("relay: {} tunnel(s) still open at exit", open_.load());
  work_.reset();
  io_.stop();
  if (thread_.joinable()) thread_.join();
  ::unlink(SocketPath(session_dir_).c_str());
}

void Relay::AcceptLocal() {
  acceptor_.async_accept([this](const asio::error_code& ec, LocalSocket sock) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      PRISM_LOG_WARN("relay: accept failed: {}", ec.message());
      return AcceptLocal();
    }
    // The first frame names the target: read it (a small frame, bounded).
    auto s = std::make_shared<LocalSocket>(std::move(sock));
    auto decoder = std::make_shared<rpc::FrameDecoder>(kMaxRelayOpenBytes);
    auto read = std::make_shared<std::function<void()>>();
    *read = [this, s, decoder, read] {
      size_t room = 0;
      char* at = decoder->WritableSpace(512, &room);
      s->async_read_some(
          asio::buffer(at, room), [this, s, decoder, read](const asio::error_code& e, size_t n) {
            if (e) {
              *read = nullptr;
              return;
            }
            decoder->Commit(n);
            std::optional<rpc::RelayOpen> target;
            bool other = false;
            Status st = decoder->Drain([&](rpc::Envelope& env) {
              if (env.has_relay_open()) {
                target = env.relay_open();
              } else {
                other = true;
              }
              return false;  // the rest is the caller's, as it is
            });
            // (A frame over kMaxRelayOpenBytes fails in Drain; a partial one waits for more.)
            if (!st.ok() || other) {
              RefuseLocal(s, "relay: " + (st.ok() ? std::string("the first frame is not RelayOpen")
                                                  : st.message()));
              *read = nullptr;
              return;
            }
            if (!target) {
              (*read)();
              return;
            }
            *read = nullptr;
            Open(s, *target, decoder->TakePending());
          });
    };
    (*read)();
    AcceptLocal();
  });
}

void Relay::Open(std::shared_ptr<LocalSocket> sock, rpc::RelayOpen open, std::string leftover) {
  if (!IsSessionSocketName(open.socket_name())) {
    return RefuseLocal(
        sock, "relay: '" + open.socket_name().substr(0, 100) + "' is not a socket of a node");
  }
  MutexLock lock(mu_);
  dials_.push_back([this, sock, open = std::move(open), leftover = std::move(leftover)]() mutable {
    auto channel = ChannelTo(open.node_address());
    asio::post(io_, [this, sock, open = std::move(open), leftover = std::move(leftover),
                     channel = std::move(channel)]() mutable {
      if (!channel.ok()) {
        return RefuseLocal(
            sock, "cannot reach node " + open.node_address() + ": " + channel.status().message());
      }
      new ClientTunnel(*this, sock, open.node_address(), *channel, open.socket_name(),
                       std::move(leftover));
    });
  });
  cv_.notify_all();
}

void Relay::DialerLoop() {
  UniqueLock lock(mu_);
  while (true) {
    cv_.wait(lock, [&]() PRISM_REQUIRES(mu_) { return stopping_ || !dials_.empty(); });
    if (stopping_) return;
    auto job = std::move(dials_.front());
    dials_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

Result<std::shared_ptr<grpc::Channel>> Relay::ChannelTo(const std::string& node_address) {
  rpc::ClusterChannel* channel = nullptr;
  {
    MutexLock lock(mu_);
    auto& slot = channels_[node_address];
    if (!slot) slot = std::make_unique<rpc::ClusterChannel>(node_address, token_);
    channel = slot.get();
  }
  return channel->Get(kDialTimeout);
}

void Relay::ForgetChannel(const std::string& node_address) {
  MutexLock lock(mu_);
  auto it = channels_.find(node_address);
  if (it != channels_.end()) it->second->Reset();
}

grpc::ServerBidiReactor<rpc::RelayChunk, rpc::RelayChunk>* Relay::Accept(
    grpc::CallbackServerContext*) {
  return new ServerTunnel(*this);
}

}  // namespace prism

// One framed-protobuf connection over a Unix-domain socket, driven by an Asio io_context.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "rpc/frame.h"

namespace prism::rpc {

using UnixSocket = asio::local::stream_protocol::socket;

/// Thread-safety: Send() and Close() may be called from any thread; the handlers run on the
/// io_context's thread, one at a time. Frames sent while a write is in flight are batched into
/// the next write, which is where pipelined throughput comes from. A connection made with
/// ShareReads() may also be read by one other thread that waits for its next frame
/// (TryReadHere); its handlers still never run two at a time, and frames keep their order.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using OnMessage = std::function<void(Connection&, Envelope&)>;
  using OnClose = std::function<void(Connection&, const Status&)>;

  static std::shared_ptr<Connection> Create(UnixSocket socket,
                                            size_t max_frame_bytes = kDefaultMaxFrameBytes);
  /// Closes a descriptor of its own (ShareReads) that no Close() closed.
  ~Connection();
  /// Starts reading. `on_close` runs exactly once, after the last `on_message`. `initial` are
  /// bytes already read from the socket by someone else (after a handshake): decoded first.
  void Start(OnMessage on_message, OnClose on_close, std::string initial = {});
  /// Before Start(): lets a thread off the loop read this connection too (TryReadHere). The loop
  /// then waits for the socket to be readable and reads under a lock, instead of keeping a read
  /// in flight that would take bytes from under the other reader. The socket leaves the loop's
  /// reactor for an epoll set of its own, which the loop watches: so that while another thread
  /// reads it (ClaimReads), frames do not wake the loop at all (Asio's reactor is woken by every
  /// frame on every socket it holds, whether or not a handler waits for it).
  void ShareReads() { shared_reads_ = true; }
  /// With ShareReads(), a thread that is about to look for frames with TryReadHere, and will
  /// until it calls ReleaseReads(): the loop neither reads nor is woken for incoming frames
  /// meanwhile (it still writes, and sees errors and hang-ups). Claims nest; each is released.
  /// Does nothing without ShareReads() or once closed.
  void ClaimReads();
  /// Ends a ClaimReads(): the loop reads again (at once, if bytes wait).
  void ReleaseReads();
  /// Before Start(): each frame is parsed into an arena of its own (FrameDecoder::ParseOnArenas),
  /// which a handler can keep past its return with HoldFrame().
  void ParseOnArenas() { decoder_.ParseOnArenas(); }
  /// Within on_message or a TryReadHere `take`, with ParseOnArenas(): the frame being handled, as
  /// a pointer that keeps it alive (a part of it can be kept by an aliasing pointer, without a
  /// copy); null otherwise.
  std::shared_ptr<Envelope> HoldFrame();
  /// Takes a frame (a thread off the loop); true when it took it, false to leave it to the loop.
  using TakeHere = std::function<bool(Connection&, Envelope&)>;
  /// For a thread off the loop that waits for this connection's next frame (a worker's executor
  /// between one caller's calls): reads what the socket holds, without blocking, and hands the
  /// frames in order to `take` on this thread while it takes them; the rest go to the loop's
  /// on_message, behind any frame handed there before. The frame that comes while the loop's
  /// thread sleeps is then taken without waking it first: one wake-up fewer per round trip.
  /// Returns whether `take` took a frame. Does nothing (false) without ShareReads(), on a closed
  /// connection, or while the loop reads (it never blocks); end of stream and read errors are
  /// left to the loop, which sees them too.
  bool TryReadHere(const TakeHere& take);
  void Send(const Envelope& msg);
  /// Queues `msg` for the loop thread to write, together with whatever else is queued by then,
  /// instead of writing it from this thread: for a sender with frames in flight already, whose
  /// frames then go out in batches (one write and one wake-up of the peer for many).
  void SendBatched(const Envelope& msg);
  /// Send() for a frame already built with AppendFrame (built under a caller's lock, say,
  /// while the message's parts were still the caller's to read).
  void SendFrame(std::string_view frame);
  /// Sends `msg` with a descriptor attached (SCM_RIGHTS, on its first byte). Only while nothing
  /// else is queued (right after the handshake); the caller keeps its own copy of `fd`.
  Status SendWithFd(const Envelope& msg, int fd);
  /// How many frames were queued to send so far (Send, SendBatched, SendFrame).
  uint64_t frames_queued() const { return frames_queued_.load(std::memory_order_relaxed); }
  /// Closes the connection; `on_close` gets `reason`. Idempotent.
  void Close(Status reason);
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  asio::any_io_executor executor() { return socket_.get_executor(); }
  /// Peer credentials of the socket (SO_PEERCRED), -1 when unknown.
  int peer_pid() const { return peer_pid_; }

  /// A slot for the owner's per-connection state (the connection does not use it).
  void* user_data = nullptr;

 private:
  Connection(UnixSocket socket, size_t max_frame_bytes);
  void ReadSome();
  /// ShareReads(), on the loop: reads what the socket holds and delivers it; false once closed.
  bool ReadShared();
  /// Delivers the frames decoded so far (under read_mu_): on the loop to on_message (`take`
  /// null), off it to `take` while it takes them and none wait on the loop, else to the loop in
  /// order. Sets `*took` when `take` took one.
  Status DeliverLocked(const TakeHere* take, bool* took) PRISM_REQUIRES(read_mu_);
  /// Runs a frame handed to the loop by TryReadHere.
  void DeliverHanded(const std::shared_ptr<Envelope>& msg);
  /// Send, SendBatched and SendFrame: appends `msg` framed (or `frame` when `msg` is null);
  /// `write_here` lets a thread off the loop write it at once when nothing else is queued.
  void Queue(const Envelope* msg, std::string_view frame, bool write_here);
  /// Takes `n` more bytes written into the decoder and delivers the frames they complete; false
  /// once the connection is closed.
  bool Consume(size_t n);
  void WriteLoop();
  void CloseOnLoop(Status reason);
  /// ShareReads(): the descriptor (out of Asio's reactor after Start), or the socket's before.
  int Fd() { return fd_ >= 0 ? fd_ : socket_.native_handle(); }
  /// ShareReads(), on the loop: waits for the connection's epoll set, then reads and writes.
  void WaitShared();
  void OnSharedReady();
  /// ShareReads(), on the loop: writes what is queued without blocking; what the socket cannot
  /// take now waits for it to become writable.
  void WriteShared();
  /// Sets what the connection's epoll set reports (under interest_mu_).
  void SetInterestLocked() PRISM_REQUIRES(interest_mu_);

  bool InLoop() const { return io_.get_executor().running_in_this_thread(); }

  UnixSocket socket_;
  asio::io_context& io_;
  bool shared_reads_ = false;
  // With shared_reads_, whoever reads holds read_mu_ (the loop blocks for it, TryReadHere only
  // tries), and the loop's on_message runs under it, so that it never runs beside `take`.
  Mutex read_mu_;         // taken before mu_ where both are held
  FrameDecoder decoder_;  // under read_mu_ with shared_reads_; the loop's alone otherwise
  // Frames TryReadHere handed to the loop that it has not run yet: while there are any, later
  // frames go to the loop too (after them), never to `take`.
  std::atomic<int> handed_{0};
  std::shared_ptr<Envelope> handed_frame_;  // the loop's, while it runs DeliverHanded
  OnMessage on_message_;
  OnClose on_close_;
  std::atomic<bool> closed_{false};
  int peer_pid_ = -1;

  Mutex mu_;
  std::string pending_ PRISM_GUARDED_BY(mu_);  // frames waiting for the next write
  bool writing_ PRISM_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> frames_queued_{0};  // written under mu_
  std::string inflight_;                    // owned by the write in flight
  size_t inflight_sent_ = 0;                // ShareReads(): how much of inflight_ went (the loop's)

  // ShareReads(), after Start: the socket's descriptor, out of Asio's reactor, in an epoll set
  // of its own that the loop watches (-1 before, and once closed).
  int fd_ = -1;
  std::unique_ptr<asio::posix::stream_descriptor> watch_;
  Mutex interest_mu_;                                       // taken after mu_ where both are held
  int claims_ PRISM_GUARDED_BY(interest_mu_) = 0;           // ClaimReads() not yet released
  bool want_write_ PRISM_GUARDED_BY(interest_mu_) = false;  // a write waits for room
  bool fds_closed_ PRISM_GUARDED_BY(interest_mu_) = false;
};

/// Runs an io_context on its own thread until Stop().
class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  asio::io_context& context() { return io_; }
  void Start(const std::string& thread_name);
  void Stop();
  /// Whether Start() ran (and Stop() did not yet).
  bool started() const { return thread_.joinable(); }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

/// Binds a listening Unix socket at `path` (replacing a stale file there).
Result<std::unique_ptr<asio::local::stream_protocol::acceptor>> Listen(asio::io_context& io,
                                                                       const std::string& path);

/// Connects to a Unix socket and sends `hello` without blocking the io_context's thread; `done`
/// runs on that thread with the socket once the peer answered Welcome (stored in the result),
/// or with why not (unreachable, Refused, no answer within `timeout`).
struct Connected {
  UnixSocket socket;
  Welcome welcome;
  std::string leftover;  // bytes read after the Welcome: pass to Connection::Start
};
void AsyncConnectAndHello(asio::io_context& io, const std::string& path, const Envelope& hello,
                          std::chrono::milliseconds timeout,
                          std::function<void(Result<Connected>)> done);

/// This process's node: its id, and its relay socket (empty: the node has no cluster port). The
/// core worker sets it when it connects to its node; dialing an Address reads it.
void SetLocalNode(const std::string& node_id, const std::string& relay_socket);
/// Whether `target` is a process of another node (reached through this node's relay).
bool IsRemote(const Address& target);
/// AsyncConnectAndHello to a process by its address: its socket when it is on this node;
/// otherwise this node's relay socket, with a RelayOpen frame naming the process's node and socket
/// before the Hello (docs/protocol.md section 19).
void AsyncConnectAndHello(asio::io_context& io, const Address& target, const Envelope& hello,
                          std::chrono::milliseconds timeout,
                          std::function<void(Result<Connected>)> done);

/// The handshake frame, and its check on the accepting side.
Envelope MakeHello(Role role, const std::string& token);
/// OK when `hello` speaks this protocol version and carries `token`; otherwise the reason to
/// put in a Refused frame.
Status CheckHello(const Hello& hello, const std::string& token);

/// Sends an Error frame answering request `request_id` (0: none in particular).
void SendErrorFrame(Connection& conn, uint64_t request_id, const Status& st);

}  // namespace prism::rpc

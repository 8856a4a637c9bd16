// A synchronous framed-protobuf client: for the prism tool, tests and benchmarks, where an
// event loop would only be in the way.
#pragma once

#include <string>

#include "base/status.h"
#include "rpc/frame.h"

namespace prism::rpc {

class BlockingClient {
 public:
  BlockingClient() = default;
  ~BlockingClient();
  BlockingClient(BlockingClient&& o) noexcept;
  BlockingClient& operator=(BlockingClient&& o) noexcept;

  /// Connects to a Unix socket (no handshake).
  static Result<BlockingClient> Connect(const std::string& socket_path);
  /// Connects and sends `hello`; OK once the peer answered Welcome (stored in `welcome`).
  static Result<BlockingClient> ConnectAndHello(const std::string& socket_path,
                                                const Envelope& hello, Welcome* welcome = nullptr,
                                                int timeout_ms = 10000);
  Status Send(const Envelope& msg);
  Status SendRaw(const std::string& bytes);
  /// Waits up to `timeout_ms` (< 0: forever) for the next frame.
  Result<Envelope> Receive(int timeout_ms);
  /// A descriptor that arrived with a frame (SCM_RIGHTS), or -1; the caller owns it.
  int TakeReceivedFd() {
    int fd = received_fd_;
    received_fd_ = -1;
    return fd;
  }
  /// Bytes read past the last frame returned (the peer may send right after its Welcome); give
  /// them to the next reader of the socket.
  std::string TakeBuffered() { return decoder_.TakePending(); }
  /// Gives up ownership of the socket (to hand it to an event loop).
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Close();
  /// Ends the connection both ways without closing the descriptor: a thread blocked in
  /// Receive() returns (with an error), and the descriptor number is not reused meanwhile.
  void Shutdown();

 private:
  int fd_ = -1;
  int received_fd_ = -1;
  FrameDecoder decoder_{kDefaultMaxFrameBytes};
};

}  // namespace prism::rpc

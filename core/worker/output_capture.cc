#include "worker/output_capture.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>

#include "base/mutex.h"

namespace prism {
namespace {

// A marker line written into both streams: the lines after it belong to a new label. It goes
// through the same pipe as the output, so it is ordered with it.
constexpr char kMarker = '\x1e';
constexpr char kStop[] = "\x1e\x1eprism-stop";

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

OutputCapture::OutputCapture(std::function<void(rpc::WorkerOutput)> send)
    : send_(std::move(send)) {}

OutputCapture::~OutputCapture() { Stop(); }

bool OutputCapture::Start() {
  if (::pipe2(out_pipe_, O_CLOEXEC) != 0) return false;
  if (::pipe2(err_pipe_, O_CLOEXEC) != 0) {
    ::close(out_pipe_[0]);
    ::close(out_pipe_[1]);
    return false;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  saved_out_ = ::fcntl(1, F_DUPFD_CLOEXEC, 3);
  saved_err_ = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
  ::dup2(out_pipe_[1], 1);
  ::dup2(err_pipe_[1], 2);
  ::close(out_pipe_[1]);
  ::close(err_pipe_[1]);
  out_pipe_[1] = err_pipe_[1] = -1;
  // Line by line, as on a terminal, so that lines arrive while the task runs.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  running_ = true;
  thread_ = std::thread([this] { Run(); });
  return true;
}

void OutputCapture::SetLabel(const std::string& label) {
  if (!running_) return;
  {
    // Tasks of one function in a row keep their label: nothing to write (the hot path).
    MutexLock lock(label_mu_);
    if (label == label_) return;
    label_ = label;
  }
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  std::string marker = std::string(1, kMarker) + label + "\n";
  WriteAll(1, marker);
  WriteAll(2, marker);
}

void OutputCapture::Stop() {
  if (!running_.exchange(false)) return;
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  std::string stop = std::string(kStop) + "\n";
  WriteAll(1, stop);
  WriteAll(2, stop);
  if (thread_.joinable()) thread_.join();
  if (saved_out_ >= 0) ::dup2(saved_out_, 1);
  if (saved_err_ >= 0) ::dup2(saved_err_, 2);
  for (int fd : {saved_out_, saved_err_, out_pipe_[0], err_pipe_[0]}) {
    if (fd >= 0) ::close(fd);
  }
  saved_out_ = saved_err_ = out_pipe_[0] = err_pipe_[0] = -1;
}

void OutputCapture::Run() {
  struct Stream {
    int fd;
    bool err;
    std::string partial;
    std::string label;
    bool open = true;
  };
  Stream streams[2] = {{out_pipe_[0], false, {}, {}}, {err_pipe_[0], true, {}, {}}};
  char buf[16384];
  while (streams[0].open || streams[1].open) {
    pollfd p[2];
    int n = 0;
    Stream* which[2];
    for (auto& s : streams) {
      if (!s.open) continue;
      p[n] = pollfd{s.fd, POLLIN, 0};
      which[n++] = &s;
    }
    if (::poll(p, static_cast<nfds_t>(n), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    rpc::WorkerOutput batch;
    for (int i = 0; i < n; ++i) {
      if ((p[i].revents & (POLLIN | POLLHUP)) == 0) continue;
      Stream& s = *which[i];
      ssize_t got = ::read(s.fd, buf, sizeof(buf));
      if (got <= 0) {
        s.open = false;
        continue;
      }
      s.partial.append(buf, static_cast<size_t>(got));
      auto emit = [&](std::string text) {
        auto* l = batch.add_lines();
        l->set_label(s.label);
        l->set_text(std::move(text));
        l->set_err(s.err);
      };
      size_t start = 0, nl;
      while ((nl = s.partial.find('\n', start)) != std::string::npos) {
        std::string line = s.partial.substr(start, nl - start);
        start = nl + 1;
        // A marker may follow text printed without a newline: that text is a line of its own.
        size_t m = line.find(kMarker);
        if (m == std::string::npos) {
          emit(std::move(line));
          continue;
        }
        if (m > 0) emit(line.substr(0, m));
        std::string marker = line.substr(m);
        if (marker == kStop) {
          s.open = false;
          break;
        }
        s.label = marker.substr(1);
      }
      s.partial.erase(0, start);
      // A line without an end is sent in pieces rather than held without bound.
      constexpr size_t kMaxLine = 64 * 1024;
      if (s.partial.size() > kMaxLine && s.partial.find(kMarker) == std::string::npos) {
        emit(std::move(s.partial));
        s.partial.clear();
      }
    }
    if (batch.lines_size() > 0) send_(std::move(batch));
  }
  // A last line without a newline.
  rpc::WorkerOutput rest;
  for (auto& s : streams) {
    if (s.partial.empty()) continue;
    auto* l = rest.add_lines();
    l->set_label(s.label);
    l->set_text(s.partial);
    l->set_err(s.err);
  }
  if (rest.lines_size() > 0) send_(std::move(rest));
}

}  // namespace prism

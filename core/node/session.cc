#include "node/session.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/ids.h"

namespace prism {
namespace {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string SessionRoot() {
  const char* base = std::getenv("PRISM_TMPDIR");
  if (base == nullptr || *base == '\0') base = std::getenv("TMPDIR");
  if (base == nullptr || *base == '\0') base = "/tmp";
  return std::string(base) + "/prism-" + std::to_string(getuid());
}

std::string NewSessionDir() {
  return SessionRoot() + "/s-" + std::to_string(getpid()) + "-" +
         RandomUniqueId().Hex().substr(0, 8);
}

std::string NewClusterToken() { return RandomUniqueId().Hex() + RandomUniqueId().Hex(); }

Status PublishSession(const SessionInfo& session, bool make_current) {
  std::string token_path = session.dir + "/token";
  {
    std::ofstream out(token_path, std::ios::trunc);
    if (!out) return Status::IOError("cannot write " + token_path);
    out << session.token << "\n";
  }
  ::chmod(token_path.c_str(), 0600);
  if (!make_current) return Status::OK();
  std::string current = SessionRoot() + "/current";
  std::string tmp = current + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return Status::IOError("cannot write " + tmp);
    out << session.dir << "\n";
  }
  if (::rename(tmp.c_str(), current.c_str()) != 0)
    return Status::IOError("cannot write " + current);
  return Status::OK();
}

void UnpublishSession(const std::string& dir) {
  std::string current = SessionRoot() + "/current";
  auto named = ReadFile(current);
  if (named.ok() && *named == dir) ::unlink(current.c_str());
  ::unlink((dir + "/token").c_str());
}

namespace {

bool DaemonRuns(const std::string& dir) {
  // A live daemon holds its socket; a stale one (a crash) leaves the file without a listener.
  std::string sock = dir + "/daemon.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return false;
  }
  std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
  bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return up;
}

}  // namespace

bool LooksLikeClusterAddress(const std::string& address) {
  if (address.empty() || address.find('/') != std::string::npos) return false;
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  for (size_t i = colon + 1; i < address.size(); ++i) {
    if (address[i] < '0' || address[i] > '9') return false;
  }
  return true;
}

bool HasCurrentSession() {
  auto dir = ReadFile(SessionRoot() + "/current");
  return dir.ok() && DaemonRuns(*dir);
}

std::vector<SessionInfo> LocalSessions() {
  std::vector<SessionInfo> out;
  auto current = ReadFile(SessionRoot() + "/current");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(SessionRoot(), ec)) {
    if (!e.is_directory(ec)) continue;
    std::string dir = e.path().string();
    auto token = ReadFile(dir + "/token");
    if (!token.ok() || !DaemonRuns(dir)) continue;
    out.push_back({dir, *token});
  }
  std::stable_partition(out.begin(), out.end(),
                        [&](const SessionInfo& s) { return !current.ok() || s.dir != *current; });
  return out;
}

std::string SessionClusterAddress(const std::string& dir) {
  auto a = ReadFile(dir + "/cluster");
  return a.ok() ? *a : "";
}

Status WriteSessionClusterAddress(const std::string& dir, const std::string& address) {
  std::string path = dir + "/cluster";
  std::ofstream out(path, std::ios::trunc);
  if (!out) return Status::IOError("cannot write " + path);
  out << address << "\n";
  return Status::OK();
}

Result<std::string> LocalClusterToken(const std::string& address) {
  for (const auto& s : LocalSessions()) {
    if (SessionClusterAddress(s.dir) == address) return s.token;
  }
  return Status::NotFound("no node of this machine belongs to the cluster at " + address);
}

Result<SessionInfo> ResolveSession(const std::string& address) {
  SessionInfo info;
  if (address.empty() || address == "auto") {
    auto dir = ReadFile(SessionRoot() + "/current");
    if (!dir.ok()) {
      return Status::NotFound(
          "no running prism daemon was found (start one with `prism start --head`)");
    }
    info.dir = *dir;
  } else if (LooksLikeClusterAddress(address)) {
    // A cluster's address: this machine's node of that cluster (the head, if it runs here).
    std::vector<SessionInfo> of_cluster;
    for (auto& s : LocalSessions()) {
      if (SessionClusterAddress(s.dir) == address) of_cluster.push_back(std::move(s));
    }
    if (of_cluster.empty()) {
      return Status::NotFound("no node of the cluster at " + address +
                              " runs on this machine (join one with `prism start --address " +
                              address + "`)");
    }
    return of_cluster.back();  // the current session last: the head where it runs here
  } else {
    info.dir = address;
  }
  auto token = ReadFile(info.dir + "/token");
  if (!token.ok()) {
    return Status::NotFound("no prism session at " + info.dir + " (no token file there)");
  }
  info.token = *token;
  return info;
}

}  // namespace prism

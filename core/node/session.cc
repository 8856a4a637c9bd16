#include "node/session.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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

Status PublishSession(const SessionInfo& session) {
  std::string token_path = session.dir + "/token";
  {
    std::ofstream out(token_path, std::ios::trunc);
    if (!out) return Status::IOError("cannot write " + token_path);
    out << session.token << "\n";
  }
  ::chmod(token_path.c_str(), 0600);
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

Result<SessionInfo> ResolveSession(const std::string& address) {
  SessionInfo info;
  if (address.empty() || address == "auto") {
    auto dir = ReadFile(SessionRoot() + "/current");
    if (!dir.ok()) {
      return Status::NotFound(
          "no running prism daemon was found (start one with `prism start --head`)");
    }
    info.dir = *dir;
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

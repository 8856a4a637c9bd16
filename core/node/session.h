// Sessions: the folder a daemon works in (its socket, its workers' sockets, its token), and how
// a driver or the prism tool finds one.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace prism {

struct SessionInfo {
  std::string dir;
  std::string token;
};

/// $PRISM_TMPDIR, else $TMPDIR, else /tmp; then "prism-<uid>".
std::string SessionRoot();
/// A fresh, unused session folder name under SessionRoot() (not created).
std::string NewSessionDir();
/// A random cluster token (hex).
std::string NewClusterToken();
/// Standalone daemons: writes <dir>/token (mode 0600) and, with `make_current`, points
/// SessionRoot()/current at dir (what address "auto" finds).
Status PublishSession(const SessionInfo& session, bool make_current = true);
/// Whether SessionRoot()/current names a session whose daemon is running.
bool HasCurrentSession();
/// The standalone sessions of this machine (this user) whose daemon is running, the current one
/// last.
std::vector<SessionInfo> LocalSessions();
/// The cluster a session's node belongs to ("IP:PORT" of its head; <dir>/cluster), or empty.
std::string SessionClusterAddress(const std::string& dir);
/// Writes <dir>/cluster.
Status WriteSessionClusterAddress(const std::string& dir, const std::string& address);
/// The token of a node of this machine that belongs to the cluster at `address`.
Result<std::string> LocalClusterToken(const std::string& address);
/// Removes the "current" pointer if it names `dir`.
void UnpublishSession(const std::string& dir);
/// Whether `address` is a cluster's "IP:PORT" (rather than a session folder).
bool LooksLikeClusterAddress(const std::string& address);
/// "auto" (or empty): the session of the running standalone daemon; a cluster's "IP:PORT": this
/// machine's node of that cluster; otherwise a session folder.
Result<SessionInfo> ResolveSession(const std::string& address);

}  // namespace prism

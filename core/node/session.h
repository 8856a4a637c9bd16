// Sessions: the folder a daemon works in (its socket, its workers' sockets, its token), and how
// a driver or the prism tool finds one.
#pragma once

#include <string>

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
/// Standalone daemons: writes <dir>/token (mode 0600) and points SessionRoot()/current at dir.
Status PublishSession(const SessionInfo& session);
/// Removes the "current" pointer if it names `dir`.
void UnpublishSession(const std::string& dir);
/// "auto" (or empty): the session of the running standalone daemon; otherwise a session folder.
Result<SessionInfo> ResolveSession(const std::string& address);

}  // namespace prism

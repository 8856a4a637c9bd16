#include "base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include <cstdlib>

namespace prism {

void InitLogging(const std::string& component, const std::string& level) {
  std::string lvl = level;
  if (lvl.empty()) {
    const char* env = std::getenv("PRISM_LOG_LEVEL");
    lvl = env != nullptr && *env != '\0' ? env : "warn";
  }
  std::string name = "prism-" + component + "-" + std::to_string(getpid());
  auto logger = spdlog::get(name);
  if (!logger) logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("[%H:%M:%S.%e] [prism " + component + " %P] [%^%l%$] %v");
  logger->set_level(spdlog::level::from_str(lvl));
  spdlog::set_default_logger(logger);
}

}  // namespace prism

// Logging goes through spdlog; these macros keep call sites short and the logger swappable.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace prism {
/// Sets up the process-wide logger: `component` prefixes every line ("daemon", "worker", ...);
/// `level` is an spdlog level name, or empty for $PRISM_LOG_LEVEL or "warn".
void InitLogging(const std::string& component, const std::string& level);
}  // namespace prism

#define PRISM_LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define PRISM_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define PRISM_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define PRISM_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define PRISM_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
#define PRISM_LOG_CRITICAL(...) ::spdlog::critical(__VA_ARGS__)

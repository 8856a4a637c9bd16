#include "base/process_info.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>

namespace prism {
namespace {

int FindBuildId(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::string*>(data);
  // The first object reported is the main program (empty name).
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
    const char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const char* name = p + sizeof(ElfW(Nhdr));
      const char* desc = name + ((nh->n_namesz + 3) & ~3u);
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        static const char kHex[] = "0123456789abcdef";
        for (uint32_t k = 0; k < nh->n_descsz; ++k) {
          auto b = static_cast<unsigned char>(desc[k]);
          out->push_back(kHex[b >> 4]);
          out->push_back(kHex[b & 0xf]);
        }
        return 1;
      }
      p = desc + ((nh->n_descsz + 3) & ~3u);
    }
  }
  return 1;  // only the main program matters
}

Result<std::vector<std::string>> ReadNulSeparated(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  std::vector<std::string> out;
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find('\0', start);
    if (end == std::string::npos) end = all.size();
    out.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

std::string SelfBuildId() {
  std::string id;
  dl_iterate_phdr(FindBuildId, &id);
  if (!id.empty()) return id;
  struct stat st {};
  if (stat("/proc/self/exe", &st) != 0) return "unknown";
  return "file:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

Result<ProcessLaunchInfo> ReadLaunchInfo(pid_t pid) {
  ProcessLaunchInfo info;
  std::string base = "/proc/" + std::to_string(pid);
  PRISM_ASSIGN_OR_RETURN(info.argv, ReadNulSeparated(base + "/cmdline"));
  PRISM_ASSIGN_OR_RETURN(info.env, ReadNulSeparated(base + "/environ"));
  char buf[4096];
  ssize_t n = readlink((base + "/cwd").c_str(), buf, sizeof(buf) - 1);
  if (n < 0)
    return Status::IOError("cannot read the working directory of process " + std::to_string(pid));
  info.cwd.assign(buf, static_cast<size_t>(n));
  if (info.argv.empty()) return Status::IOError("process " + std::to_string(pid) + " has no argv");
  return info;
}

bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() &&
         (line[paren + 2] == 'Z' || line[paren + 2] == 'X');
}

std::string LibprismDir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&LibprismDir), &info) == 0 || info.dli_fname == nullptr)
    return "";
  std::string path = info.dli_fname;
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

Result<void*> OpenBesideLibprism(const std::string& file) {
  std::string dir = LibprismDir();
  std::string path = dir.empty() ? file : dir + "/" + file;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = dlerror();
    return Status::Unavailable(e != nullptr ? e : path + " did not load");
  }
  return handle;
}

}  // namespace prism

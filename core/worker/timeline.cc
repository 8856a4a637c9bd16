#include "worker/timeline.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "base/mutex.h"

namespace prism {

using nlohmann::json;

TimelineRecorder::~TimelineRecorder() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  Flush(/*wait=*/true);
  MutexLock lock(mu_);
  if (file_) std::fclose(file_);
}

int64_t TimelineRecorder::NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void TimelineRecorder::WriteLocked(const std::string& line) {
  if (failed_) return;
  if (!file_) {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    file_ = std::fopen((dir_ + "/" + std::to_string(getpid()) + ".jsonl").c_str(), "ae");
    if (!file_) {
      failed_ = true;  // recording is best effort: a task never fails for it
      return;
    }
  }
  std::fputs(line.c_str(), file_);
  std::fputc('\n', file_);
  std::fflush(file_);
}

void TimelineRecorder::Task(const std::string& name, const std::string& task_id, int64_t start_us,
                            int64_t end_us) {
  json j{{"name", name},
         {"cat", "task"},
         {"ts", start_us},
         {"dur", end_us - start_us},
         {"pid", getpid()},
         {"track", "thread " + std::to_string(gettid())},
         {"args", {{"task_id", task_id}}}};
  MutexLock lock(mu_);
  WriteLocked(j.dump());
  PollLocked(false);
}

void TimelineRecorder::GpuTask(const std::string& name, const std::string& task_id,
                               int64_t start_us, const std::string& stream,
                               std::unique_ptr<gpu::Event> start, std::unique_ptr<gpu::Event> end) {
  MutexLock lock(mu_);
  pending_.push_back(Pending{name, task_id, stream, start_us, std::move(start), std::move(end)});
  PollLocked(false);
  if (!pending_.empty() && !poller_.joinable()) {
    poller_ = std::thread([this] {
      UniqueLock lock(mu_);
      while (!stop_) {
        cv_.wait_for(lock, std::chrono::milliseconds(50));
        PollLocked(false);
      }
    });
  }
}

void TimelineRecorder::PollLocked(bool wait) {
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    if (wait) {
      (void)p.end->Synchronize();
    } else if (auto done = p.end->Query(); done.ok() && !*done) {
      return;  // not done yet (later ones may be, on other streams: they wait their turn)
    }
    auto ms = p.end->ElapsedSince(*p.start);
    if (ms.ok()) {
      json j{{"name", p.name},
             {"cat", "gpu"},
             {"ts", p.start_us},
             {"dur", static_cast<int64_t>(*ms * 1000)},
             {"pid", getpid()},
             {"track", p.stream},
             {"args", {{"task_id", p.task_id}, {"gpu_ms", *ms}}}};
      WriteLocked(j.dump());
    }
    pending_.pop_front();
  }
}

void TimelineRecorder::Flush(bool wait) {
  MutexLock lock(mu_);
  PollLocked(wait);
}

Status WriteChromeTrace(const std::string& session_dir, const std::string& path) {
  std::string dir = session_dir + "/timeline";
  json events = json::array();
  std::error_code ec;
  std::map<std::pair<int64_t, std::string>, int> tids;  // (pid, track) -> tid
  std::map<int64_t, int> next_tid;
  if (std::filesystem::is_directory(dir, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        json e = json::parse(line, nullptr, false);
        if (e.is_discarded() || !e.is_object() || !e.contains("pid")) continue;  // a torn last line
        int64_t pid = e["pid"].get<int64_t>();
        std::string track = e.value("track", "thread");
        auto key = std::make_pair(pid, track);
        auto it = tids.find(key);
        if (it == tids.end()) {
          // GPU streams sort below the worker's threads.
          int tid = (e.value("cat", "") == "gpu" ? 1000 : 1) + next_tid[pid]++;
          it = tids.emplace(key, tid).first;
          events.push_back({{"ph", "M"},
                            {"name", "thread_name"},
                            {"pid", pid},
                            {"tid", tid},
                            {"args", {{"name", track}}}});
          if (next_tid[pid] == 1) {
            events.push_back({{"ph", "M"},
                              {"name", "process_name"},
                              {"pid", pid},
                              {"tid", 0},
                              {"args", {{"name", "worker " + std::to_string(pid)}}}});
          }
        }
        e.erase("track");
        e["ph"] = "X";
        e["tid"] = it->second;
        events.push_back(std::move(e));
      }
    }
  }
  std::ofstream out(path);
  if (!out) return Status::IOError("cannot write " + path);
  out << json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!out) return Status::IOError("cannot write " + path);
  return Status::OK();
}

}  // namespace prism

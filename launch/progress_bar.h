// A one-line progress bar on stderr for work a person waits on (trainer-data).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace memento {

enum class ProgressUnit { kCount, kBytes };

// Redrawn at most every 100 ms on a terminal; on a non-terminal only the final line is printed.
// With kBytes the counts show as MB, with the rate.
class ProgressBar {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressBar(std::string label, int64_t total, ProgressUnit unit = ProgressUnit::kCount)
      : label_(std::move(label)),
        total_(std::max<int64_t>(total, 1)),
        unit_(unit),
        tty_(isatty(2) != 0) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() { finish(); }

  void update(int64_t done) {
    done_ = done;
    const auto now = Clock::now();
    if (!tty_ || now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    draw('\r');
  }
  void finish() {
    if (finished_) return;
    finished_ = true;
    draw(tty_ ? '\r' : '\0');
    std::fputc('\n', stderr);
  }

 private:
  void draw(char lead) {
    constexpr int kWidth = 30;
    constexpr double kMB = 1e6;
    const double frac = std::clamp(static_cast<double>(done_) / total_, 0.0, 1.0);
    const int filled = static_cast<int>(frac * kWidth);
    const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (lead != '\0') std::fputc(lead, stderr);
    if (unit_ == ProgressUnit::kBytes) {
      std::fprintf(stderr, "%s [%s] %3d%% %.1f/%.1f MB %.1fs %.1f MB/s", label_.c_str(),
                   bar.c_str(), static_cast<int>(frac * 100), done_ / kMB, total_ / kMB, seconds,
                   seconds > 0 ? done_ / kMB / seconds : 0.0);
    } else {
      std::fprintf(stderr, "%s [%s] %3d%% %lld/%lld %.1fs", label_.c_str(), bar.c_str(),
                   static_cast<int>(frac * 100), static_cast<long long>(done_),
                   static_cast<long long>(total_), seconds);
    }
    std::fflush(stderr);
  }

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  ProgressUnit unit_;
  bool tty_;
  bool finished_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_draw_{};
};

}  // namespace memento

#include "core/cuda/op_profiler.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "core/cuda/check.h"

namespace memento::cuda {
namespace {

struct Record {
  const char* op;
  cudaEvent_t start;
  cudaEvent_t end;
};

std::atomic<bool> g_on{false};
std::mutex g_mutex;
std::vector<Record>& records() {
  static auto& r = *new std::vector<Record>();  // leaked: events outlive static destruction
  return r;
}

}  // namespace

void set_op_profiling(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool op_profiling() { return g_on.load(std::memory_order_relaxed); }

OpTimer::OpTimer(const char* op) {
  if (!op_profiling()) return;
  Record r{op, nullptr, nullptr};
  CUDA_CHECK(cudaEventCreate(&r.start));
  CUDA_CHECK(cudaEventCreate(&r.end));
  CUDA_CHECK(cudaEventRecord(r.start, nullptr));
  const std::lock_guard<std::mutex> lock(g_mutex);
  slot_ = static_cast<int>(records().size());
  records().push_back(r);
}

OpTimer::~OpTimer() {
  if (slot_ < 0) return;
  cudaEvent_t end = nullptr;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    end = records()[static_cast<size_t>(slot_)].end;
  }
  CUDA_CHECK(cudaEventRecord(end, nullptr));
}

std::string op_profile_report(double step_ms) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<Record> taken;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    taken.swap(records());
  }
  struct Sum {
    int64_t calls = 0;
    double ms = 0;
  };
  std::map<std::string, Sum> sums;
  double total = 0;
  for (const Record& r : taken) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.end));
    CUDA_CHECK(cudaEventDestroy(r.start));
    CUDA_CHECK(cudaEventDestroy(r.end));
    Sum& s = sums[r.op];
    ++s.calls;
    s.ms += ms;
    total += ms;
  }
  std::vector<std::pair<std::string, Sum>> rows(sums.begin(), sums.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::string out;
  char line[160];
  std::snprintf(line, sizeof(line), "  %-28s %7s %10s %7s\n", "op", "calls", "ms", "share");
  out += line;
  for (const auto& [op, s] : rows) {
    std::snprintf(line, sizeof(line), "  %-28s %7lld %10.3f %6.1f%%\n", op.c_str(),
                  static_cast<long long>(s.calls), s.ms, 100.0 * s.ms / step_ms);
    out += line;
  }
  std::snprintf(line, sizeof(line), "  %-28s %7s %10.3f %6.1f%%  (of a %.3f ms step)\n",
                "ops total", "", total, 100.0 * total / step_ms, step_ms);
  out += line;
  return out;
}

}  // namespace memento::cuda

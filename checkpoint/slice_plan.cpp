#include "checkpoint/slice_plan.h"

#include <algorithm>

namespace memento::checkpoint {

CoverPlan plan_cover(ElementRange requested, const std::vector<ElementRange>& stored) {
  // Sweep the slices in order of their first element: every slice starting at or before the
  // current element is a candidate, and the candidate that reaches furthest is the one to take.
  std::vector<size_t> order;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (!stored[i].empty()) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return stored[a].begin < stored[b].begin; });
  CoverPlan plan;
  size_t next = 0;              // first slice in `order` not yet a candidate
  size_t best = stored.size();  // candidate reaching furthest
  int64_t at = requested.begin;
  while (at < requested.end) {
    for (; next < order.size() && stored[order[next]].begin <= at; ++next) {
      const size_t i = order[next];
      if (best == stored.size() || stored[i].end > stored[best].end ||
          (stored[i].end == stored[best].end && i < best)) {
        best = i;
      }
    }
    if (best == stored.size() || stored[best].end <= at) {
      const int64_t gap_end =
          next < order.size() ? std::min(stored[order[next]].begin, requested.end) : requested.end;
      plan.gap = ElementRange{at, gap_end};
      return plan;
    }
    const int64_t end = std::min(stored[best].end, requested.end);
    plan.pieces.push_back({best, {at, end}});
    at = end;
  }
  return plan;
}

}  // namespace memento::checkpoint

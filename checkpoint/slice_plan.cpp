#include "checkpoint/slice_plan.h"

#include <algorithm>

namespace memento::checkpoint {
namespace {

// Appends to `out` the boxes of elements [begin, end) of the sub-array whose leading indices are
// start[0..d) (row-major, counted from that sub-array's first element). `box` is scratch.
void add_flat_boxes(const Shape& full, TensorBox& box, int d, int64_t begin, int64_t end,
                    std::vector<TensorBox>& out) {
  if (begin >= end) return;
  int64_t stride = 1;  // elements per index of dimension d
  for (int k = d + 1; k < full.ndim(); ++k) stride *= full[k];
  const auto add_rows = [&](int64_t first, int64_t rows) {
    TensorBox b = box;
    b.start = b.start.with_dim(d, first);
    b.count = b.count.with_dim(d, rows);
    for (int k = d + 1; k < full.ndim(); ++k) {
      b.start = b.start.with_dim(k, 0);
      b.count = b.count.with_dim(k, full[k]);
    }
    out.push_back(b);
  };
  const auto recurse = [&](int64_t index, int64_t sub_begin, int64_t sub_end) {
    box.start = box.start.with_dim(d, index);
    box.count = box.count.with_dim(d, 1);
    add_flat_boxes(full, box, d + 1, sub_begin, sub_end, out);
  };
  if (stride == 1) {
    add_rows(begin, end - begin);
    return;
  }
  int64_t first = begin / stride;
  if (first == (end - 1) / stride) {
    recurse(first, begin - first * stride, end - first * stride);
    return;
  }
  if (begin % stride != 0) {  // a partial leading row
    recurse(first, begin % stride, stride);
    ++first;
  }
  const int64_t whole_end = end / stride;  // rows [first, whole_end) are whole
  if (first < whole_end) add_rows(first, whole_end - first);
  if (end % stride != 0) recurse(whole_end, 0, end % stride);  // a partial trailing row
}

}  // namespace

int64_t flat_index(const Shape& full, const Shape& index) {
  int64_t flat = 0;
  for (int d = 0; d < full.ndim(); ++d) flat = flat * full[d] + index[d];
  return flat;
}

Shape unflatten(const Shape& full, int64_t flat) {
  Shape index = full;
  for (int d = full.ndim() - 1; d >= 0; --d) {
    index = index.with_dim(d, flat % full[d]);
    flat /= full[d];
  }
  return index;
}

std::vector<TensorBox> TensorRegion::boxes() const {
  std::vector<TensorBox> out;
  if (numel() <= 0) return out;
  if (!is_flat) {
    out.push_back(box);
  } else if (full.ndim() == 0) {
    out.push_back(TensorBox::whole(full));
  } else {
    TensorBox scratch = TensorBox::whole(full);
    add_flat_boxes(full, scratch, 0, range.begin, range.end, out);
  }
  return out;
}

int64_t TensorRegion::position(const Shape& index) const {
  if (is_flat) return flat_index(full, index) - range.begin;
  int64_t at = 0;
  for (int d = 0; d < full.ndim(); ++d) at = at * box.count[d] + (index[d] - box.start[d]);
  return at;
}

void TensorRegion::for_each_run(
    const std::function<void(const Shape& index, int64_t length)>& fn) const {
  if (numel() <= 0) return;
  const int n = full.ndim();
  if (n == 0) {
    fn(full, 1);
    return;
  }
  if (is_flat) {
    for (int64_t at = range.begin; at < range.end;) {
      const Shape index = unflatten(full, at);
      const int64_t length = std::min(range.end, at - index[n - 1] + full[n - 1]) - at;
      fn(index, length);
      at += length;
    }
    return;
  }
  // An odometer over the box's indices in every dimension but the last.
  Shape index = box.start;
  do {
    fn(index, box.count[n - 1]);
  } while (box.next_index(index, n - 1));
}

std::optional<TensorBox> intersect(const TensorBox& a, const TensorBox& b) {
  if (a.numel() <= 0 || b.numel() <= 0) return std::nullopt;
  TensorBox out = a;
  for (int d = 0; d < a.ndim(); ++d) {
    const int64_t begin = std::max(a.start[d], b.start[d]);
    const int64_t end = std::min(a.end(d), b.end(d));
    if (end <= begin) return std::nullopt;
    out.start = out.start.with_dim(d, begin);
    out.count = out.count.with_dim(d, end - begin);
  }
  return out;
}

std::vector<TensorBox> subtract(const TensorBox& a, const TensorBox& b) {
  const std::optional<TensorBox> common = intersect(a, b);
  if (!common) return a.numel() > 0 ? std::vector<TensorBox>{a} : std::vector<TensorBox>{};
  // Peel off, one dimension at a time, the slabs of `rest` below and above the common box; what
  // stays of `rest` narrows to the common box in that dimension.
  std::vector<TensorBox> out;
  TensorBox rest = a;
  for (int d = 0; d < a.ndim(); ++d) {
    const auto slab = [&](int64_t begin, int64_t end) {
      if (begin >= end) return;
      TensorBox s = rest;
      s.start = s.start.with_dim(d, begin);
      s.count = s.count.with_dim(d, end - begin);
      out.push_back(s);
    };
    slab(rest.start[d], common->start[d]);
    slab(common->end(d), rest.end(d));
    rest.start = rest.start.with_dim(d, common->start[d]);
    rest.count = rest.count.with_dim(d, common->count[d]);
  }
  return out;
}

CoverPlan plan_cover(const TensorRegion& requested, const std::vector<TensorRegion>& stored) {
  std::vector<TensorBox> remaining = requested.boxes();
  std::vector<std::vector<TensorBox>> boxes(stored.size());
  std::vector<int64_t> overlap(stored.size(), 0);  // elements of the request each slice holds
  for (size_t i = 0; i < stored.size(); ++i) {
    boxes[i] = stored[i].boxes();
    for (const TensorBox& b : boxes[i]) {
      for (const TensorBox& q : remaining) {
        if (const auto common = intersect(q, b)) overlap[i] += common->numel();
      }
    }
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (overlap[i] > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return overlap[a] > overlap[b]; });
  CoverPlan plan;
  for (const size_t source : order) {
    for (const TensorBox& b : boxes[source]) {
      std::vector<TensorBox> next;
      for (const TensorBox& q : remaining) {
        if (const auto common = intersect(q, b)) {
          plan.pieces.push_back({source, *common});
          const std::vector<TensorBox> left = subtract(q, b);
          next.insert(next.end(), left.begin(), left.end());
        } else {
          next.push_back(q);
        }
      }
      remaining = std::move(next);
    }
    if (remaining.empty()) break;
  }
  if (!remaining.empty()) {
    plan.gap = *std::min_element(
        remaining.begin(), remaining.end(), [&](const TensorBox& a, const TensorBox& b) {
          return flat_index(requested.full, a.start) < flat_index(requested.full, b.start);
        });
  }
  return plan;
}

}  // namespace memento::checkpoint

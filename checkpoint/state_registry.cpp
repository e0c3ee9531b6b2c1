#include "checkpoint/state_registry.h"

#include <utility>

namespace memento::checkpoint {

std::string_view entry_kind_name(EntryKind kind) {
  switch (kind) {
    case EntryKind::kTensor:
      return "tensor";
    case EntryKind::kInt:
      return "int";
    case EntryKind::kDouble:
      return "double";
    case EntryKind::kString:
      return "string";
  }
  return "?";
}

bool valid_state_name(std::string_view name) {
  int segments = 0;
  size_t begin = 0;
  while (begin <= name.size()) {
    size_t end = name.find('/', begin);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view segment = name.substr(begin, end - begin);
    if (segment.empty() || segment == "." || segment == "..") return false;
    for (char c : segment) {
      if (c < 0x20 || c > 0x7e) return false;
    }
    ++segments;
    begin = end + 1;
  }
  return segments >= 2;
}

namespace {

// A tensor entry over `local`, which holds all or part of a logical tensor of shape full_shape.
StateEntry tensor_entry(std::string name, const TensorView& local, Shape full_shape) {
  MEMENTO_CHECK(!local.is_meta(), "state tensor ", name, " is a kMeta tensor without storage");
  MEMENTO_CHECK(local.raw() != nullptr || local.numel() == 0, "state tensor ", name,
                " has no data pointer");
  StateEntry entry;
  entry.name = std::move(name);
  entry.kind = EntryKind::kTensor;
  entry.tensor = local;
  entry.full_shape = std::move(full_shape);
  return entry;
}

}  // namespace

void StateRegistry::add_tensor(std::string name, TensorView view) {
  add(tensor_entry(std::move(name), view, view.shape()));
}

void StateRegistry::add_tensor_slice(std::string name, TensorView local, Shape full_shape,
                                     int64_t offset) {
  MEMENTO_CHECK(local.ndim() == 1, "state tensor slice ", name, " must be 1-D, got shape ",
                local.shape().str());
  MEMENTO_CHECK(offset >= 0 && offset + local.numel() <= full_shape.numel(), "state tensor slice ",
                name, ": elements [", offset, ", ", offset + local.numel(),
                ") lie outside a tensor of shape ", full_shape.str());
  if (offset == 0 && local.numel() == full_shape.numel()) {
    add_tensor(std::move(name), TensorView(local.raw(), full_shape, local.dtype(), local.device()));
    return;
  }
  StateEntry entry = tensor_entry(std::move(name), local, std::move(full_shape));
  entry.offset = offset;
  add(std::move(entry));
}

void StateRegistry::add_tensor_box(std::string name, TensorView local, Shape full_shape,
                                   const TensorBox& box) {
  MEMENTO_CHECK(box.inside(full_shape), "state tensor box ", name, ": ", box.str(),
                " is not a box of a tensor of shape ", full_shape.str());
  MEMENTO_CHECK(local.shape() == box.count, "state tensor box ", name, ": the view has shape ",
                local.shape().str(), ", the box ", box.count.str());
  if (box == TensorBox::whole(full_shape)) {
    add_tensor(std::move(name), local);
    return;
  }
  StateEntry entry = tensor_entry(std::move(name), local, std::move(full_shape));
  entry.is_box = true;
  entry.box_start = box.start;
  add(std::move(entry));
}

TensorRegion StateEntry::region() const {
  if (is_box) return TensorRegion::of_box(full_shape, {box_start, tensor.shape()});
  if (offset == 0 && tensor.shape() == full_shape) return TensorRegion::whole(full_shape);
  return TensorRegion::flat(full_shape, {offset, offset + tensor.numel()});
}

void StateRegistry::add_int(std::string name, int64_t* value) {
  MEMENTO_CHECK(value != nullptr, "state int ", name, " is a null pointer");
  StateEntry entry;
  entry.name = std::move(name);
  entry.kind = EntryKind::kInt;
  entry.int_value = value;
  add(std::move(entry));
}

void StateRegistry::add_double(std::string name, double* value) {
  MEMENTO_CHECK(value != nullptr, "state double ", name, " is a null pointer");
  StateEntry entry;
  entry.name = std::move(name);
  entry.kind = EntryKind::kDouble;
  entry.double_value = value;
  add(std::move(entry));
}

void StateRegistry::add_string(std::string name, std::string* value) {
  MEMENTO_CHECK(value != nullptr, "state string ", name, " is a null pointer");
  StateEntry entry;
  entry.name = std::move(name);
  entry.kind = EntryKind::kString;
  entry.string_value = value;
  add(std::move(entry));
}

void StateRegistry::add(StateEntry entry) {
  const std::string& name = entry.name;
  MEMENTO_CHECK(valid_state_name(name), "state name \"", name,
                "\" is not \"group/name\" (non-empty segments, printable ASCII)");
  MEMENTO_CHECK(!index_.contains(name), "state name ", name, " is registered twice");
  // A name cannot be both an entry and the group holding other entries: in HDF5 "a/b" cannot be
  // a dataset and a group at once.
  MEMENTO_CHECK(!interior_.contains(name), "state name ", name,
                " is the parent path of an already registered name");
  for (size_t slash = name.find('/'); slash != std::string::npos;
       slash = name.find('/', slash + 1)) {
    const std::string parent = name.substr(0, slash);
    MEMENTO_CHECK(!index_.contains(parent), "state name ", name, " lies under the registered name ",
                  parent);
    interior_.insert(parent);
  }
  index_.emplace(name, entries_.size());
  entries_.push_back(std::move(entry));
}

const StateEntry* StateRegistry::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

size_t StateRegistry::tensor_bytes() const {
  size_t bytes = 0;
  for (const StateEntry& e : entries_) {
    if (e.kind == EntryKind::kTensor) bytes += e.tensor.bytes();
  }
  return bytes;
}

}  // namespace memento::checkpoint

// The model-directory side of checkpoint/safetensors.h: sharding as transformers does it, the
// index file, and opening a directory for reading.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"

namespace memento::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Files of the layout: a stale one of an earlier export is removed after a new export.
bool is_model_file(const std::string& name) {
  static const std::regex kShard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return name == kSafetensorsSingleFile || name == kSafetensorsIndexFile ||
         std::regex_match(name, kShard);
}

void remove_file(const std::string& path) {
  std::error_code error;
  fs::remove(path, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot remove ", path, ": ", error.message());
}

std::string read_text(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  MEMENTO_EXPECT(f != nullptr, CheckpointError, "cannot open ", path);
  std::string text;
  char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  MEMENTO_EXPECT(!failed, CheckpointError, "cannot read ", path);
  return text;
}

}  // namespace

std::vector<std::vector<size_t>> plan_safetensors_shards(const std::vector<SafetensorsSpec>& specs,
                                                         uint64_t max_shard_bytes) {
  MEMENTO_EXPECT(max_shard_bytes > 0, CheckpointError, "max shard size must be positive");
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t bytes = specs[i].bytes();
    if (bytes > max_shard_bytes) {  // alone, as huggingface_hub's split_state_dict_into_shards
      shards.push_back({i});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes && !current.empty()) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  return shards;
}

std::vector<std::string> safetensors_shard_names(size_t shards) {
  if (shards == 1) return {std::string(kSafetensorsSingleFile)};
  std::vector<std::string> names;
  for (size_t i = 1; i <= shards; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i, shards);
    names.emplace_back(name);
  }
  return names;
}

std::vector<std::string> write_safetensors_model(
    const std::string& dir, const std::vector<SafetensorsSpec>& specs, uint64_t max_shard_bytes,
    const std::function<std::vector<SafetensorsEntry>(const std::vector<size_t>&)>& load,
    const std::map<std::string, std::string>& metadata) {
  std::error_code error;
  fs::create_directories(dir, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create ", dir, ": ", error.message());
  const auto shards = plan_safetensors_shards(specs, max_shard_bytes);
  const auto names = safetensors_shard_names(shards.size());
  std::vector<std::string> written;
  json weight_map = json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::vector<SafetensorsEntry> entries = load(shards[s]);
    MEMENTO_CHECK(entries.size() == shards[s].size(), "shard ", s, ": ", entries.size(),
                  " entries for ", shards[s].size(), " tensors");
    for (size_t k = 0; k < entries.size(); ++k) {
      const SafetensorsSpec& spec = specs[shards[s][k]];
      MEMENTO_CHECK(entries[k].name == spec.name && entries[k].tensor.shape() == spec.shape &&
                        entries[k].dtype == spec.dtype,
                    "shard entry ", entries[k].name, " does not match its spec ", spec.name);
      weight_map[spec.name] = names[s];
      total += spec.bytes();
    }
    written.push_back(join_path(dir, names[s]));
    write_safetensors(written.back(), entries, metadata);
  }
  // transformers prefers model.safetensors over an index: a stale one must go before the index
  // is published; stale shards are harmless once the index no longer names them.
  std::set<std::string> keep(names.begin(), names.end());
  if (shards.size() > 1) keep.insert(std::string(kSafetensorsIndexFile));
  auto remove_stale = [&](const std::function<bool(const std::string&)>& which) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (is_model_file(name) && keep.count(name) == 0 && which(name))
        remove_file(entry.path().string());
    }
  };
  remove_stale([](const std::string& name) { return name == kSafetensorsSingleFile; });
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    written.push_back(join_path(dir, kSafetensorsIndexFile));
    write_file_atomic(written.back(), index.dump(2) + "\n");
  }
  remove_stale([](const std::string&) { return true; });
  fsync_dir(dir);
  return written;
}

SafetensorsModel open_safetensors_model(const std::string& dir) {
  SafetensorsModel model;
  const std::string index_path = join_path(dir, kSafetensorsIndexFile);
  const std::string single_path = join_path(dir, kSafetensorsSingleFile);
  const bool has_index = fs::exists(index_path);
  const bool has_single = fs::exists(single_path);
  MEMENTO_EXPECT(has_index || has_single, CheckpointError, dir, ": no ", kSafetensorsSingleFile,
                 " and no ", kSafetensorsIndexFile);
  MEMENTO_EXPECT(!(has_index && has_single), CheckpointError, dir, ": both ",
                 kSafetensorsSingleFile, " and ", kSafetensorsIndexFile,
                 " are present; remove the stale one");
  if (has_single) {
    model.files.emplace_back(single_path);
    for (const auto& t : model.files[0].tensors()) model.tensors[t.name] = {0, &t};
    return model;
  }
  json index;
  try {
    index = json::parse(read_text(index_path));
  } catch (const json::parse_error& e) {
    throw CheckpointError(memento::detail::concat(index_path, ": byte offset ", e.byte,
                                                  ": not valid JSON: ", e.what()));
  }
  MEMENTO_EXPECT(
      index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
      CheckpointError, index_path, ": no 'weight_map' object");
  std::map<std::string, std::string> weight_map;  // tensor -> file
  std::map<std::string, size_t> file_index;
  for (const auto& [name, file] : index["weight_map"].items()) {
    MEMENTO_EXPECT(file.is_string(), CheckpointError, index_path, ": weight_map['", name,
                   "'] is not a file name");
    const auto file_name = file.get<std::string>();
    MEMENTO_EXPECT(!file_name.empty() && file_name.find('/') == std::string::npos &&
                       file_name != "." && file_name != "..",
                   CheckpointError, index_path, ": weight_map['", name, "'] = '", file_name,
                   "' is not a file name in ", dir);
    weight_map[name] = file_name;
    if (file_index.count(file_name) == 0) {
      file_index[file_name] = model.files.size();
      model.files.emplace_back(join_path(dir, file_name));
    }
  }
  for (const auto& [name, file_name] : weight_map) {
    const size_t f = file_index[file_name];
    const SafetensorsTensorInfo* t = model.files[f].find(name);
    MEMENTO_EXPECT(t != nullptr, CheckpointError, index_path, ": tensor '", name, "' is listed in ",
                   file_name, ", which does not hold it");
    model.tensors[name] = {f, t};
  }
  for (const auto& [file_name, f] : file_index) {
    for (const auto& t : model.files[f].tensors()) {
      const auto listed = weight_map.find(t.name);
      MEMENTO_EXPECT(listed != weight_map.end() && listed->second == file_name, CheckpointError,
                     model.files[f].path(), ": holds tensor '", t.name, "', which ",
                     kSafetensorsIndexFile,
                     listed == weight_map.end() ? " does not list" : " places in another file");
    }
  }
  return model;
}

}  // namespace memento::checkpoint

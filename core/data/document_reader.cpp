#include "core/data/document_reader.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

bool has_extension(const fs::path& path, std::initializer_list<const char*> exts) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const char* e : exts)
    if (ext == e) return true;
  return false;
}

void refuse_unsupported(const fs::path& path) {
  MEMENTO_EXPECT(!has_extension(path, {".gz", ".zst", ".zstd", ".xz", ".bz2", ".lz4", ".zip"}),
                 DataError, path.string(),
                 ": compressed input is not supported; decompress it first (gunzip, zstd -d)");
  MEMENTO_EXPECT(!has_extension(path, {".parquet", ".arrow"}), DataError, path.string(),
                 ": Parquet/Arrow input is not supported; export the text column as JSONL");
}

// The line [start, end) of text beginning at `start`, and where the next one begins.
std::string_view line_at(std::string_view text, size_t start, size_t& next) {
  const void* nl = std::memchr(text.data() + start, '\n', text.size() - start);
  const size_t end =
      nl ? static_cast<size_t>(static_cast<const char*>(nl) - text.data()) : text.size();
  next = nl ? end + 1 : end;
  return text.substr(start, end - start);
}

}  // namespace

InputFormat parse_input_format(std::string_view name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "text") return InputFormat::kText;
  if (name == "jsonl") return InputFormat::kJsonl;
  throw DataError(
      detail::concat("--input-format: expected auto, text or jsonl, got \"", name, "\""));
}

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n\v\f") == std::string_view::npos;
}

DocumentReader::DocumentReader(const std::vector<std::string>& inputs,
                               DocumentReaderOptions options)
    : options_(std::move(options)) {
  MEMENTO_EXPECT(!inputs.empty(), DataError, "no INPUT files or directories given (see --help)");
  MEMENTO_EXPECT(!options_.json_key.empty(), DataError, "--json-key: expected a field name");
  for (const std::string& input : inputs) {
    MEMENTO_EXPECT(fs::exists(input), DataError, input, ": no such file or directory");
    std::vector<fs::path> found;
    if (fs::is_directory(input)) {
      for (const auto& entry : fs::recursive_directory_iterator(input))
        if (entry.symlink_status().type() == fs::file_type::regular) found.push_back(entry.path());
      std::sort(found.begin(), found.end());
    } else {
      found.emplace_back(input);
    }
    for (const fs::path& path : found) {
      refuse_unsupported(path);
      files_.push_back(path.string());
      sizes_.push_back(static_cast<int64_t>(fs::file_size(path)));
      total_bytes_ += sizes_.back();
      const bool json = options_.format == InputFormat::kJsonl ||
                        (options_.format == InputFormat::kAuto &&
                         has_extension(path, {".jsonl", ".json", ".ndjson"}));
      json_.push_back(json);
    }
  }
  MEMENTO_EXPECT(!files_.empty(), DataError, "no input files found in ", inputs.front(),
                 inputs.size() > 1 ? " and the other inputs" : "");
}

int64_t DocumentReader::bytes_done() const {
  return done_bytes_ + (current_ ? static_cast<int64_t>(pos_) : 0);
}

bool DocumentReader::open_next_file() {
  while (next_file_ < files_.size()) {
    const int index = static_cast<int>(next_file_++);
    auto file = std::make_shared<const MappedFile>(files_[index]);
    const std::string_view bytes(reinterpret_cast<const char*>(file->data()),
                                 static_cast<size_t>(file->size()));
    if (!json_[index] && std::memchr(bytes.data(), '\0', bytes.size()) != nullptr) {
      ++skipped_binary_;
      done_bytes_ += file->size();
      continue;
    }
    ++(json_[index] ? jsonl_files_ : text_files_);
    current_ = std::move(file);
    current_index_ = index;
    pos_ = 0;
    line_ = 1;
    return true;
  }
  return false;
}

bool DocumentReader::next(DocumentBatch& batch, int64_t max_bytes) {
  batch.documents.clear();
  batch.mapped.clear();
  if (current_) batch.mapped.push_back(current_);
  int64_t bytes = 0;
  while (bytes < max_bytes) {
    if (!current_) {
      if (!open_next_file()) break;
      batch.mapped.push_back(current_);
    }
    const std::string_view text(reinterpret_cast<const char*>(current_->data()),
                                static_cast<size_t>(current_->size()));
    const size_t start = pos_;
    const int64_t start_line = line_;
    RawDocument doc{{}, current_index_, start_line, json_[current_index_]};
    if (doc.json) {
      size_t next = 0;
      std::string_view line = line_at(text, pos_, next);
      if (line.ends_with('\r')) line.remove_suffix(1);
      doc.bytes = line;
      pos_ = next;
      ++line_;
    } else if (options_.doc_separator.empty()) {
      doc.bytes = text;
      pos_ = text.size();
    } else {
      // Lines up to one that is only the separator; the separator line belongs to no document.
      size_t end = text.size();
      while (pos_ < text.size()) {
        size_t next = 0;
        std::string_view line = line_at(text, pos_, next);
        ++line_;
        if (line.ends_with('\r')) line.remove_suffix(1);
        if (line == options_.doc_separator) {
          end = pos_;
          pos_ = next;
          break;
        }
        pos_ = next;
      }
      doc.bytes = text.substr(start, std::min(end, pos_) - start);
    }
    bytes += static_cast<int64_t>(pos_ - start);
    if (!is_blank(doc.bytes)) batch.documents.push_back(doc);
    if (pos_ >= text.size()) {
      done_bytes_ += current_->size();
      current_.reset();
    }
  }
  return !batch.documents.empty() || current_ || next_file_ < files_.size();
}

std::string_view DocumentReader::document_text(const RawDocument& doc, std::string& storage) const {
  if (!doc.json) return doc.bytes;
  const std::string& file = files_[doc.file];
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(doc.bytes);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(detail::concat(file, ":", doc.line, ": not valid JSON: ", e.what()));
  }
  MEMENTO_EXPECT(value.is_object(), DataError, file, ":", doc.line,
                 ": expected a JSON object, found ", value.type_name());
  auto it = value.find(options_.json_key);
  if (it == value.end()) {
    std::string keys;
    for (const auto& item : value.items()) keys += (keys.empty() ? "" : ", ") + item.key();
    throw DataError(detail::concat(file, ":", doc.line, ": no \"", options_.json_key,
                                   "\" field in the JSON object (its keys: ",
                                   keys.empty() ? "none" : keys, "; --json-key picks the field)"));
  }
  MEMENTO_EXPECT(it->is_string(), DataError, file, ":", doc.line, ": field \"", options_.json_key,
                 "\" is ", it->type_name(), ", expected a string");
  storage = it->get<std::string>();
  return storage;
}

}  // namespace memento

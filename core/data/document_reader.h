// Reads documents from text files and JSONL files in batches, through mmap.
//   text:  a file is one document, or with a separator SEP, the file splits into documents at
//          lines consisting only of SEP (fortune files: "%"). Files with NUL bytes are skipped
//          as binary.
//   JSONL: one JSON object per line, the document being its string field `json_key` ("text",
//          as Megatron's preprocess_data.py reads). Blank lines are skipped; a line that is not
//          such an object is a DataError naming the file and line.
// Directories are read recursively (regular files, sorted by path). Documents that are empty
// or only whitespace are dropped. Parsing a JSONL line is left to document_text(), so that
// tokenizer threads can do it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/mapped_file.h"

namespace memento {

enum class InputFormat { kAuto, kText, kJsonl };  // auto: .jsonl/.json/.ndjson are JSONL

// Parses "auto" | "text" | "jsonl"; throws DataError otherwise.
InputFormat parse_input_format(std::string_view name);

struct DocumentReaderOptions {
  InputFormat format = InputFormat::kAuto;
  std::string doc_separator;      // text files; empty: one document per file
  std::string json_key = "text";  // JSONL files
};

// A document as read: its text (text files) or its JSONL line, viewing a mapped file.
struct RawDocument {
  std::string_view bytes;
  int file = 0;      // index into DocumentReader::files()
  int64_t line = 0;  // 1-based line where it starts
  bool json = false;
};

struct DocumentBatch {
  std::vector<RawDocument> documents;
  std::vector<std::shared_ptr<const MappedFile>> mapped;  // keeps the views valid
};

// True when text is empty or only ASCII whitespace.
bool is_blank(std::string_view text);

class DocumentReader {
 public:
  // Lists the input files. Throws DataError for a missing input, a compressed or columnar file
  // (.gz, .zst, .parquet, ...), or when there are no files at all.
  DocumentReader(const std::vector<std::string>& inputs, DocumentReaderOptions options);

  // Replaces batch with the next documents, about max_bytes of them (at least one when any is
  // left); returns false when every input has been read.
  bool next(DocumentBatch& batch, int64_t max_bytes);

  // The text of a document: its bytes, or its JSONL line's field (copied into storage).
  // Throws DataError naming the file and line for a line that is not a JSON object with a
  // string field options.json_key.
  std::string_view document_text(const RawDocument& doc, std::string& storage) const;

  const std::vector<std::string>& files() const { return files_; }
  int64_t total_bytes() const { return total_bytes_; }  // of all input files
  int64_t bytes_done() const;                           // of the input read so far
  int text_files() const { return text_files_; }
  int jsonl_files() const { return jsonl_files_; }
  int skipped_binary() const { return skipped_binary_; }

 private:
  bool open_next_file();

  DocumentReaderOptions options_;
  std::vector<std::string> files_;
  std::vector<int64_t> sizes_;
  std::vector<bool> json_;
  int64_t total_bytes_ = 0;
  int64_t done_bytes_ = 0;  // of files finished
  size_t next_file_ = 0;
  std::shared_ptr<const MappedFile> current_;
  int current_index_ = -1;
  size_t pos_ = 0;
  int64_t line_ = 1;
  int text_files_ = 0;
  int jsonl_files_ = 0;
  int skipped_binary_ = 0;
};

}  // namespace memento

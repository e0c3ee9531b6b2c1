// Documents from text and JSONL files: separators, binary files, JSON escapes and Unicode, and
// errors that name the file and line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/data/document_reader.h"
#include "core/error.h"
#include "testing/expect_error.h"
#include "testing/temp_dir_test.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

using testing::data_error_of;

class DocumentReaderTest : public testing::TempDirTest {
 protected:
  // Every document's text and line, reading in batches of max_bytes.
  static std::vector<std::pair<std::string, int64_t>> read(DocumentReader& r, int64_t max_bytes) {
    std::vector<std::pair<std::string, int64_t>> out;
    DocumentBatch batch;
    std::string storage;
    while (r.next(batch, max_bytes))
      for (const RawDocument& d : batch.documents)
        out.emplace_back(std::string(r.document_text(d, storage)), d.line);
    return out;
  }
};

TEST_F(DocumentReaderTest, JsonlEscapesUnicodeAndOtherKeys) {
  const std::string file =
      write("a.jsonl",
            "{\"text\": \"line one\\nline two\\ttab \\\"quoted\\\" back\\\\slash\", \"id\": 1}\n"
            "\n"
            "{\"id\": 2, \"text\": \"caf\\u00e9 \\ud83d\\ude42 na\xC3\xAFve "
            "\xE6\x97\xA5\xE6\x9C\xAC\"}\r\n"
            "   \n"
            "{\"text\": \"   \"}\n"
            "{\"text\": \"last, no newline\", \"meta\": {\"text\": \"nested\"}}");
  DocumentReader r({file}, {});
  EXPECT_EQ(r.jsonl_files(), 0);  // counted when opened
  const auto docs = read(r, 1 << 20);
  ASSERT_EQ(docs.size(), 4u);  // blank lines dropped; the blank text is the caller's to drop
  EXPECT_EQ(docs[0].first, "line one\nline two\ttab \"quoted\" back\\slash");
  EXPECT_EQ(docs[0].second, 1);
  EXPECT_EQ(docs[1].first, "caf\xC3\xA9 \xF0\x9F\x99\x82 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC");
  EXPECT_EQ(docs[1].second, 3);
  EXPECT_EQ(docs[2].first, "   ");
  EXPECT_TRUE(is_blank(docs[2].first));
  EXPECT_EQ(docs[3].first, "last, no newline");
  EXPECT_EQ(docs[3].second, 6);
  EXPECT_EQ(r.jsonl_files(), 1);

  DocumentReaderOptions content;
  content.json_key = "content";
  write("b.json", "{\"content\": \"x\", \"text\": \"y\"}\n");
  DocumentReader rc({path("b.json")}, content);
  EXPECT_EQ(read(rc, 1 << 20), (std::vector<std::pair<std::string, int64_t>>{{"x", 1}}));
}

TEST_F(DocumentReaderTest, BadJsonlLinesNameFileAndLine) {
  auto error_of = [&](const std::string& body, DocumentReaderOptions o = {}) {
    const std::string file = write("bad.jsonl", body);
    DocumentReader r({file}, o);
    return data_error_of([&] { read(r, 1 << 20); });
  };
  const std::string f = path("bad.jsonl");
  std::string msg = error_of("{\"text\": \"ok\"}\n{\"text\": \"missing\" \"comma\"}\n");
  EXPECT_NE(msg.find(f + ":2: not valid JSON: "), std::string::npos) << msg;
  msg = error_of("{\"text\": \"ok\"}\n\n{\"body\": \"x\", \"id\": 7}\n");
  EXPECT_EQ(msg, f + ":3: no \"text\" field in the JSON object (its keys: body, id; --json-key "
                     "picks the field)");
  msg = error_of("{\"text\": 12}\n");
  EXPECT_EQ(msg, f + ":1: field \"text\" is number, expected a string");
  msg = error_of("[\"text\"]\n");
  EXPECT_EQ(msg, f + ":1: expected a JSON object, found array");
  msg = error_of("{\"text\": \"\xFF\"}\n");
  EXPECT_NE(msg.find(f + ":1: not valid JSON"), std::string::npos) << msg;
  DocumentReaderOptions body;
  body.json_key = "body";
  msg = error_of("{\"text\": \"x\"}\n", body);
  EXPECT_NE(msg.find(f + ":1: no \"body\" field"), std::string::npos) << msg;
}

TEST_F(DocumentReaderTest, TextFilesSeparatorsBinaryAndDirectories) {
  write("corpus/b.txt", "first\n%\nsecond\r\nline\n%\r\n  \n%\nthird");
  write("corpus/a/z.txt", "whole file\n");
  write("corpus/bin.dat", std::string("bin\0ary", 7));
  write("corpus/blank.txt", " \n\t\n");
  DocumentReaderOptions o;
  o.doc_separator = "%";
  DocumentReader r({path("corpus")}, o);
  EXPECT_EQ(r.files().size(), 4u);
  EXPECT_EQ(r.files()[0], path("corpus/a/z.txt"));  // sorted by path
  const auto docs = read(r, 5);  // small batches: documents must not depend on batching
  EXPECT_EQ(docs, (std::vector<std::pair<std::string, int64_t>>{
                      {"whole file\n", 1}, {"first\n", 1}, {"second\r\nline\n", 3}, {"third", 8}}));
  EXPECT_EQ(r.skipped_binary(), 1);
  EXPECT_EQ(r.text_files(), 3);
  EXPECT_EQ(r.bytes_done(), r.total_bytes());

  DocumentReader whole({path("corpus/b.txt")}, {});
  EXPECT_EQ(read(whole, 1 << 20).size(), 1u);
  // A .jsonl read as text on request.
  write("t.jsonl", "not json\n");
  DocumentReaderOptions text;
  text.format = InputFormat::kText;
  DocumentReader as_text({path("t.jsonl")}, text);
  EXPECT_EQ(read(as_text, 1 << 20).front().first, "not json\n");
}

TEST_F(DocumentReaderTest, RefusesMissingCompressedAndEmptyInputs) {
  EXPECT_NE(data_error_of([&] {
              DocumentReader r({path("nope")}, {});
            }).find(path("nope") + ": no such file or directory"),
            std::string::npos);
  write("c.jsonl.gz", "x");
  EXPECT_NE(data_error_of([&] {
              DocumentReader r({path("c.jsonl.gz")}, {});
            }).find(path("c.jsonl.gz") + ": compressed input is not supported"),
            std::string::npos);
  write("d.parquet", "x");
  EXPECT_NE(data_error_of([&] { DocumentReader r({path("d.parquet")}, {}); }).find("Parquet"),
            std::string::npos);
  fs::create_directories(path("empty"));
  EXPECT_NE(data_error_of([&] { DocumentReader r({path("empty")}, {}); }).find("no input files"),
            std::string::npos);
  EXPECT_NE(data_error_of([] { parse_input_format("csv"); }).find("expected auto, text or jsonl"),
            std::string::npos);
}

}  // namespace
}  // namespace memento

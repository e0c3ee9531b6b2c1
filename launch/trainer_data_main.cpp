// trainer-data: trains a byte-level BPE tokenizer, tokenizes text corpora into llm.c or
// Megatron token files, and describes token files. Run `trainer-data --help`.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/data/bpe_tokenizer.h"
#include "core/data/token_dataset.h"
#include "core/error.h"

namespace fs = std::filesystem;
using memento::BpeTokenizer;
using memento::DataError;
using memento::TokenDataset;

namespace {

constexpr std::string_view kUsage = R"(usage:
  trainer-data train-tokenizer --vocab-size N --out FILE [--doc-separator SEP] INPUT...
  trainer-data tokenize (--tokenizer FILE | --bytes) --out PREFIX [--format llmc|megatron]
                        [--val-fraction F] [--doc-separator SEP] INPUT...
  trainer-data info [--format auto|llmc|megatron] [--vocab-size N] PATH

INPUT is a text file or a directory (read recursively: regular files only, files containing
NUL bytes are skipped as binary). Each file is one document, or with --doc-separator SEP the
file splits into documents at lines consisting only of SEP (fortune files: --doc-separator %).

train-tokenizer  learns a byte-level BPE vocabulary of N tokens (256 bytes, <|endoftext|>,
                 then merges) and writes it to FILE.
tokenize         encodes every document, each preceded by <|endoftext|>, and writes the last
                 F of the documents (default 0.05) as validation: PREFIX_train.bin and
                 PREFIX_val.bin (llm.c shards, the default) or PREFIX_train.{idx,bin} and
                 PREFIX_val.{idx,bin} (Megatron). --bytes uses one token per byte (vocab 257).
info             prints the format, token count and token statistics of a token file, an llm.c
                 glob ("data/x_train_*.bin") or a Megatron prefix; --vocab-size N also checks
                 that every id is below N.
)";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A one-line progress bar on stderr, redrawn at most every 100 ms; on a non-terminal only the
// final line is printed.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total)
      : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), tty_(isatty(2) != 0) {}
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
    const double frac = std::clamp(static_cast<double>(done_) / total_, 0.0, 1.0);
    const int filled = static_cast<int>(frac * kWidth);
    const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    if (lead != '\0') std::fputc(lead, stderr);
    std::fprintf(stderr, "%s [%s] %3d%% %lld/%lld %.1fs", label_.c_str(), bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<long long>(done_),
                 static_cast<long long>(total_), seconds_since(start_));
    std::fflush(stderr);
  }

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  bool tty_;
  bool finished_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_draw_{};
};

struct Args {
  std::string command;
  std::map<std::string, std::string> options;  // "--out" -> value
  bool bytes = false;
  std::vector<std::string> inputs;

  bool has(const std::string& key) const { return options.count(key) != 0; }
  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = options.find(key);
    return it == options.end() ? fallback : it->second;
  }
  std::string require(const std::string& key) const {
    MEMENTO_EXPECT(has(key), DataError, command, " needs ", key, " (see --help)");
    return get(key);
  }
};

int64_t parse_int(const std::string& key, const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MEMENTO_EXPECT(used == text.size() && !text.empty(), DataError, key,
                 ": expected an integer, got \"", text, "\"");
  return value;
}

double parse_double(const std::string& key, const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MEMENTO_EXPECT(used == text.size() && !text.empty(), DataError, key,
                 ": expected a number, got \"", text, "\"");
  return value;
}

Args parse_args(int argc, char** argv) {
  static const std::vector<std::string> kValued = {
      "--vocab-size", "--out", "--tokenizer", "--format", "--val-fraction", "--doc-separator"};
  Args args;
  args.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bytes") {
      args.bytes = true;
    } else if (std::find(kValued.begin(), kValued.end(), a) != kValued.end()) {
      MEMENTO_EXPECT(i + 1 < argc, DataError, a, " needs a value");
      args.options[a] = argv[++i];
    } else if (a.starts_with("--")) {
      throw DataError(memento::detail::concat("unknown option ", a, " (see --help)"));
    } else {
      args.inputs.push_back(a);
    }
  }
  return args;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), DataError, path.string(), ": cannot open");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Splits text at lines that consist only of `separator`; drops blank documents.
void split_documents(const std::string& text, const std::string& separator,
                     std::vector<std::string>& out) {
  auto keep = [&](std::string doc) {
    if (doc.find_first_not_of(" \t\r\n") != std::string::npos) out.push_back(std::move(doc));
  };
  if (separator.empty()) return keep(text);
  std::string doc;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    const size_t next = eol == std::string::npos ? text.size() : eol + 1;
    std::string_view line(text.data() + pos, (eol == std::string::npos ? text.size() : eol) - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line == separator) {
      keep(std::move(doc));
      doc.clear();
    } else {
      doc.append(text, pos, next - pos);
    }
    pos = next;
  }
  keep(std::move(doc));
}

struct Corpus {
  std::vector<std::string> documents;
  int64_t bytes = 0;
  int files = 0;
  int skipped_binary = 0;
};

Corpus read_corpus(const std::vector<std::string>& inputs, const std::string& separator) {
  MEMENTO_EXPECT(!inputs.empty(), DataError, "no INPUT files or directories given (see --help)");
  std::vector<fs::path> files;
  for (const std::string& input : inputs) {
    MEMENTO_EXPECT(fs::exists(input), DataError, input, ": no such file or directory");
    if (!fs::is_directory(input)) {
      files.emplace_back(input);
      continue;
    }
    std::vector<fs::path> found;
    for (const auto& entry : fs::recursive_directory_iterator(input))
      if (entry.symlink_status().type() == fs::file_type::regular) found.push_back(entry.path());
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  Corpus corpus;
  for (const fs::path& path : files) {
    std::string text = read_file(path);
    if (std::memchr(text.data(), '\0', text.size()) != nullptr) {
      ++corpus.skipped_binary;
      continue;
    }
    ++corpus.files;
    corpus.bytes += static_cast<int64_t>(text.size());
    split_documents(text, separator, corpus.documents);
  }
  MEMENTO_EXPECT(!corpus.documents.empty(), DataError, "no text documents found in the inputs (",
                 files.size(), " files, ", corpus.skipped_binary, " binary)");
  std::fprintf(stderr, "read %d text files (%lld bytes, %zu documents), skipped %d binary files\n",
               corpus.files, static_cast<long long>(corpus.bytes), corpus.documents.size(),
               corpus.skipped_binary);
  return corpus;
}

void ensure_parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
}

int train_tokenizer(const Args& args) {
  const int64_t vocab = parse_int("--vocab-size", args.require("--vocab-size"));
  MEMENTO_EXPECT(vocab >= 257 && vocab <= (int64_t{1} << 31) - 1, DataError,
                 "--vocab-size: expected an integer >= 257, got ", vocab);
  const std::string out = args.require("--out");
  const Corpus corpus = read_corpus(args.inputs, args.get("--doc-separator"));
  const auto t0 = Clock::now();
  std::optional<BpeTokenizer> tok;
  {
    ProgressBar bar("merges", vocab - 257);
    tok = BpeTokenizer::train(corpus.documents, static_cast<int>(vocab),
                              [&](int done, int) { bar.update(done); });
  }
  const double train_s = seconds_since(t0);
  ensure_parent_dir(out);
  tok->save(out);
  const auto t1 = Clock::now();
  int64_t tokens = 0;
  for (const std::string& doc : corpus.documents)
    tokens += static_cast<int64_t>(tok->encode(doc).size());
  std::printf(
      "tokenizer %s: vocab %d (%d merges), trained in %.2fs; corpus encodes to %lld "
      "tokens (%.2f bytes/token) in %.2fs\n",
      out.c_str(), tok->vocab_size(), tok->num_merges(), train_s, static_cast<long long>(tokens),
      static_cast<double>(corpus.bytes) / tokens, seconds_since(t1));
  if (tok->vocab_size() < vocab)
    std::printf("note: the corpus ran out of repeated pairs before vocab %lld\n",
                static_cast<long long>(vocab));
  return 0;
}

int tokenize(const Args& args) {
  MEMENTO_EXPECT(args.bytes != args.has("--tokenizer"), DataError,
                 "tokenize needs exactly one of --tokenizer FILE and --bytes");
  const BpeTokenizer tok =
      args.bytes ? BpeTokenizer::bytes() : BpeTokenizer::load(args.get("--tokenizer"));
  const std::string prefix = args.require("--out");
  const std::string format = args.get("--format", "llmc");
  MEMENTO_EXPECT(format == "llmc" || format == "megatron", DataError,
                 "--format: expected llmc or megatron, got \"", format, "\"");
  MEMENTO_EXPECT(format != "llmc" || tok.vocab_size() <= 65536, DataError,
                 "llm.c shards hold uint16 tokens but the tokenizer has ", tok.vocab_size(),
                 " ids; use --format megatron");
  const double val_fraction = parse_double("--val-fraction", args.get("--val-fraction", "0.05"));
  MEMENTO_EXPECT(val_fraction >= 0 && val_fraction < 1, DataError,
                 "--val-fraction: expected a number in [0, 1), got ", val_fraction);
  const Corpus corpus = read_corpus(args.inputs, args.get("--doc-separator"));
  const int64_t n_docs = static_cast<int64_t>(corpus.documents.size());
  const int64_t n_val =
      val_fraction > 0 ? std::max<int64_t>(1, std::llround(val_fraction * n_docs)) : 0;
  MEMENTO_EXPECT(n_val < n_docs, DataError, "--val-fraction ", val_fraction, " leaves no ",
                 "training documents out of ", n_docs, "; lower it or add documents");

  const auto t0 = Clock::now();
  std::vector<std::vector<int32_t>> encoded;
  encoded.reserve(corpus.documents.size());
  {
    ProgressBar bar("tokenize", n_docs);
    for (const std::string& doc : corpus.documents) {
      std::vector<int32_t> ids = {tok.eot()};
      const std::vector<int32_t> body = tok.encode(doc);
      ids.insert(ids.end(), body.begin(), body.end());
      encoded.push_back(std::move(ids));
      bar.update(static_cast<int64_t>(encoded.size()));
    }
  }
  const double encode_s = seconds_since(t0);
  ensure_parent_dir(prefix);
  int64_t total = 0;
  auto write_split = [&](const std::string& name, int64_t first, int64_t last) {
    if (first == last) return;
    const std::vector<std::vector<int32_t>> docs(encoded.begin() + first, encoded.begin() + last);
    int64_t tokens = 0;
    for (const auto& d : docs) tokens += static_cast<int64_t>(d.size());
    total += tokens;
    const std::string path = prefix + "_" + name;
    if (format == "megatron") {
      memento::write_megatron_dataset(path, docs);
    } else {
      std::vector<uint16_t> flat;
      flat.reserve(static_cast<size_t>(tokens));
      for (const auto& d : docs)
        for (int32_t t : d) flat.push_back(static_cast<uint16_t>(t));
      memento::write_llmc_shard(path + ".bin", flat);
    }
    std::printf("%s: %lld documents, %lld tokens -> %s%s\n", name.c_str(),
                static_cast<long long>(last - first), static_cast<long long>(tokens), path.c_str(),
                format == "megatron" ? ".{idx,bin}" : ".bin");
  };
  write_split("train", 0, n_docs - n_val);
  write_split("val", n_docs - n_val, n_docs);
  std::printf("encoded %lld bytes into %lld tokens (%.2f bytes/token, vocab %d) in %.2fs\n",
              static_cast<long long>(corpus.bytes), static_cast<long long>(total),
              static_cast<double>(corpus.bytes) / static_cast<double>(total), tok.vocab_size(),
              encode_s);
  return 0;
}

int info(const Args& args) {
  MEMENTO_EXPECT(args.inputs.size() == 1, DataError, "info needs exactly one PATH");
  const TokenDataset data(args.inputs[0], args.get("--format", "auto"));
  std::printf("%s\n", data.describe().c_str());
  std::map<int32_t, int64_t> histogram;
  constexpr int64_t kChunk = 1 << 16;
  std::vector<int32_t> buf(kChunk);
  {
    ProgressBar bar("scan", data.size());
    for (int64_t at = 0; at < data.size(); at += kChunk) {
      const int64_t n = std::min(kChunk, data.size() - at);
      data.read(at, n, buf.data());
      for (int64_t k = 0; k < n; ++k) ++histogram[buf[k]];
      bar.update(at + n);
    }
  }
  if (!histogram.empty()) {
    std::vector<std::pair<int64_t, int32_t>> top;
    for (const auto& [id, count] : histogram) top.emplace_back(-count, id);
    std::sort(top.begin(), top.end());
    std::printf("ids: min %d, max %d, %zu distinct\nmost frequent:", histogram.begin()->first,
                histogram.rbegin()->first, histogram.size());
    for (size_t i = 0; i < std::min<size_t>(8, top.size()); ++i)
      std::printf(" %d (%.2f%%)", top[i].second, -100.0 * top[i].first / data.size());
    std::printf("\n");
  }
  if (args.has("--vocab-size")) {
    const int64_t vocab = parse_int("--vocab-size", args.get("--vocab-size"));
    data.check_vocab(vocab);
    std::printf("every id is below the vocab size %lld\n", static_cast<long long>(vocab));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
    std::fputs(kUsage.data(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  for (int i = 2; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
  }
  try {
    const Args args = parse_args(argc, argv);
    if (args.command == "train-tokenizer") return train_tokenizer(args);
    if (args.command == "tokenize") return tokenize(args);
    if (args.command == "info") return info(args);
    throw DataError(memento::detail::concat("unknown command \"", args.command,
                                            "\" (expected train-tokenizer, tokenize or info)"));
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "trainer-data: error: %s\n", e.what());
    return 1;
  }
}

// trainer-data: trains a tokenizer (Memento BPE or SentencePiece), tokenizes text and JSONL
// corpora with any supported tokenizer into sharded llm.c or Megatron token files, and
// describes tokenizers and token files. Run `trainer-data --help`; docs/data.md has examples.
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
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/data/bpe_tokenizer.h"
#include "core/data/mapped_file.h"
#include "core/data/sentencepiece_tokenizer.h"
#include "core/data/token_dataset.h"
#include "core/data/tokenizer.h"
#include "core/error.h"
#include "launch/data_prep.h"
#include "launch/hf_weights.h"
#include "launch/progress_bar.h"

namespace fs = std::filesystem;
using memento::BpeTokenizer;
using memento::DataError;
using memento::ProgressBar;
using memento::TokenDataset;

namespace {

constexpr std::string_view kUsage = R"(usage:
  trainer-data train-tokenizer --vocab-size N --out FILE [--type bpe|sentencepiece]
                        [--doc-separator SEP] [--input-format auto|text|jsonl] [--json-key KEY]
                        INPUT...
  trainer-data tokenize (--tokenizer FILE | --bytes) --out PREFIX [--format llmc|megatron]
                        [--val-fraction F] [--seed S] [--shard-tokens N] [--threads N]
                        [--append-eos] [--doc-separator SEP] [--input-format auto|text|jsonl]
                        [--json-key KEY] INPUT...
  trainer-data tokenizer-info [--text TEXT] FILE
  trainer-data info [--format auto|llmc|megatron] [--vocab-size N] PATH
  trainer-data export-hf --checkpoint DIR --out DIR [--dtype f32|bf16] [--max-shard-size 5GB]

INPUT is a file or a directory (read recursively, sorted). Text files: each file is one
document, or with --doc-separator SEP the file splits into documents at lines consisting only
of SEP (fortune files: --doc-separator %); files containing NUL bytes are skipped as binary.
JSONL files (.jsonl, .json, .ndjson, or any file with --input-format jsonl): one JSON object per
line, the document being its "text" field (--json-key picks another). Blank documents are
dropped.

A tokenizer FILE is a Memento .bpe, a Hugging Face tokenizer.json of byte-level BPE type
(GPT-2, Llama 3, Qwen), a SentencePiece .model (Llama 2), or a directory holding
tokenizer.json or tokenizer.model.

train-tokenizer  learns a vocabulary of N tokens and writes it to FILE: a Memento byte-level
                 BPE (256 bytes, <|endoftext|>, then merges; the default) or with
                 --type sentencepiece a SentencePiece BPE model in Llama 2's settings.
tokenize         encodes every document, preceded by the tokenizer's BOS (Llama) or else its
                 EOS (<|endoftext|>: GPT-2, Memento) and with --append-eos followed by EOS, on
                 --threads threads (default: all cores; the output is the same for any count).
                 Documents go to validation at random with probability F (--val-fraction,
                 default 0.05; --seed S, default 1) and are written in shards of at most N
                 tokens (--shard-tokens, default 100000000):
                   llmc:     PREFIX_train_000000.bin, ... and PREFIX_val_000000.bin, ...
                             (version 1 uint16 tokens, version 2 uint32 past 65536 ids)
                   megatron: PREFIX_train_000000.{bin,idx}, ... and PREFIX_val_000000.{bin,idx}
                 Shards of an earlier run that this one did not write are removed. The
                 trainer reads a split as data.train: PREFIX_train_*.bin (llmc) or
                 PREFIX_train (megatron). --bytes uses one token per byte (vocab 257).
tokenizer-info   prints a tokenizer's kind, vocabulary size and BOS/EOS, and with --text the
                 ids of TEXT and their decoding.
info             prints the format, token count and token statistics of a token file, an llm.c
                 glob ("data/x_train_*.bin"), a Megatron prefix or a prefix with shards;
                 --vocab-size N also checks that every id is below N.
export-hf        writes a trainer checkpoint (a step_* directory, or a checkpoint root: its
                 latest complete checkpoint) as a Hugging Face model directory: config.json
                 (LlamaForCausalLM) and model.safetensors, or above --max-shard-size (default
                 5GB; 500MB, 2GiB, bytes) model-0000i-of-0000N.safetensors shards and
                 model.safetensors.index.json. --dtype f32 (default) is bit-exact, bf16 rounds.
                 Models with linear-attention layers get model_type memento_llama and the keys
                 Memento needs to read them back (docs/hf-weights.md).
)";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Args {
  std::string command;
  std::map<std::string, std::string> options;  // "--out" -> value
  bool bytes = false;
  bool append_eos = false;
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
      "--vocab-size",    "--out",  "--tokenizer",    "--format",  "--val-fraction",
      "--doc-separator", "--seed", "--shard-tokens", "--threads", "--input-format",
      "--json-key",      "--type", "--text"};
  Args args;
  args.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bytes") {
      args.bytes = true;
    } else if (a == "--append-eos") {
      args.append_eos = true;
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

memento::DocumentReaderOptions reader_options(const Args& args) {
  memento::DocumentReaderOptions o;
  o.format = memento::parse_input_format(args.get("--input-format", "auto"));
  o.doc_separator = args.get("--doc-separator");
  o.json_key = args.get("--json-key", "text");
  return o;
}

struct Corpus {
  std::vector<std::string> documents;
  int64_t bytes = 0;
};

Corpus read_corpus(const Args& args) {
  Corpus corpus;
  corpus.documents = memento::read_all_documents(args.inputs, reader_options(args), &corpus.bytes);
  std::fprintf(stderr, "read %zu documents (%lld bytes)\n", corpus.documents.size(),
               static_cast<long long>(corpus.bytes));
  return corpus;
}

void ensure_parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
}

int train_tokenizer(const Args& args) {
  const std::string type = args.get("--type", "bpe");
  MEMENTO_EXPECT(type == "bpe" || type == "sentencepiece", DataError,
                 "--type: expected bpe or sentencepiece, got \"", type, "\"");
  const int64_t vocab = parse_int("--vocab-size", args.require("--vocab-size"));
  const int64_t min_vocab = type == "bpe" ? 257 : 8;
  MEMENTO_EXPECT(vocab >= min_vocab && vocab <= (int64_t{1} << 31) - 1, DataError,
                 "--vocab-size: expected an integer >= ", min_vocab, ", got ", vocab);
  const std::string out = args.require("--out");
  const Corpus corpus = read_corpus(args);
  const auto t0 = Clock::now();
  std::unique_ptr<memento::Tokenizer> tok;
  if (type == "sentencepiece") {
    const std::string model = memento::SentencePieceTokenizer::train(
        corpus.documents, static_cast<int>(vocab), "bpe", memento::available_cores());
    ensure_parent_dir(out);
    memento::write_file_atomically(out, model);
    tok = memento::SentencePieceTokenizer::from_bytes(model, out);
  } else {
    std::optional<BpeTokenizer> bpe;
    {
      ProgressBar bar("merges", vocab - 257);
      bpe = BpeTokenizer::train(corpus.documents, static_cast<int>(vocab),
                                [&](int done, int) { bar.update(done); });
    }
    ensure_parent_dir(out);
    bpe->save(out);
    tok = memento::make_memento_bpe_tokenizer(std::move(*bpe), out);
  }
  const double train_s = seconds_since(t0);
  const auto t1 = Clock::now();
  int64_t tokens = 0;
  for (const std::string& doc : corpus.documents)
    tokens += static_cast<int64_t>(tok->encode(doc).size());
  std::printf(
      "%s\ntrained in %.2fs; the corpus encodes to %lld tokens (%.2f bytes/token) in %.2fs\n",
      tok->describe().c_str(), train_s, static_cast<long long>(tokens),
      static_cast<double>(corpus.bytes) / static_cast<double>(std::max<int64_t>(tokens, 1)),
      seconds_since(t1));
  if (tok->vocab_size() < vocab)
    std::printf("note: the corpus ran out of repeated pairs before vocab %lld\n",
                static_cast<long long>(vocab));
  return 0;
}

int tokenize(const Args& args) {
  MEMENTO_EXPECT(args.bytes != args.has("--tokenizer"), DataError,
                 "tokenize needs exactly one of --tokenizer FILE and --bytes");
  const std::unique_ptr<memento::Tokenizer> tok =
      args.bytes ? memento::make_memento_bpe_tokenizer(BpeTokenizer::bytes(), "--bytes")
                 : memento::load_tokenizer(args.get("--tokenizer"));
  memento::TokenizeOptions o;
  o.inputs = args.inputs;
  o.reader = reader_options(args);
  o.out_prefix = args.require("--out");
  const std::string format = args.get("--format", "llmc");
  MEMENTO_EXPECT(format == "llmc" || format == "megatron", DataError,
                 "--format: expected llmc or megatron, got \"", format, "\"");
  o.format = format == "llmc" ? memento::TokenFormat::kLlmc : memento::TokenFormat::kMegatron;
  o.val_fraction = parse_double("--val-fraction", args.get("--val-fraction", "0.05"));
  const int64_t seed = parse_int("--seed", args.get("--seed", "1"));
  MEMENTO_EXPECT(seed >= 0, DataError, "--seed: expected an integer >= 0, got ", seed);
  o.seed = static_cast<uint64_t>(seed);
  o.shard_tokens = parse_int("--shard-tokens", args.get("--shard-tokens", "100000000"));
  MEMENTO_EXPECT(
      o.shard_tokens >= 1 && o.shard_tokens <= memento::ShardedTokenWriter::kMaxShardTokens,
      DataError, "--shard-tokens: expected 1 to ", memento::ShardedTokenWriter::kMaxShardTokens,
      ", got ", o.shard_tokens);
  const int64_t threads = parse_int("--threads", args.get("--threads", "0"));
  MEMENTO_EXPECT(threads >= 0 && threads <= 4096, DataError,
                 "--threads: expected a count from 1 to 4096 (0: all cores), got ", threads);
  o.threads = static_cast<int>(threads);
  o.append_eos = args.append_eos;
  std::printf("tokenizer: %s\n", tok->describe().c_str());
  if (!memento::document_start_id(*tok))
    std::printf(
        "warning: the tokenizer has no BOS or EOS token: documents follow one another "
        "with nothing between them\n");
  std::fflush(stdout);

  const memento::TokenizeReport r = memento::tokenize_corpus(o, *tok);
  constexpr double kMB = 1e6;
  for (const auto& [name, split] : {std::pair{"train", &r.train}, std::pair{"val", &r.val}}) {
    if (split->documents == 0) continue;
    std::printf("%s: %lld documents, %lld tokens -> %s\n", name,
                static_cast<long long>(split->documents), static_cast<long long>(split->tokens),
                memento::describe_files(split->files).c_str());
  }
  if (r.removed_stale_files > 0)
    std::printf("removed %lld shard files of an earlier run\n",
                static_cast<long long>(r.removed_stale_files));
  const int64_t docs = r.train.documents + r.val.documents;
  const int64_t tokens = r.train.tokens + r.val.tokens;
  const double s = std::max(r.seconds, 1e-9);
  std::printf(
      "tokenized %lld documents (%.2f MB) into %lld tokens (%.2f bytes/token) in %.2f s: "
      "%.2f MB/s, %.0f tokens/s on %d threads\n",
      static_cast<long long>(docs), r.input_bytes / kMB, static_cast<long long>(tokens),
      static_cast<double>(r.input_bytes) / static_cast<double>(std::max<int64_t>(tokens, 1)),
      r.seconds, r.input_bytes / kMB / s, static_cast<double>(tokens) / s, r.threads);
  return 0;
}

int tokenizer_info(const Args& args) {
  MEMENTO_EXPECT(args.inputs.size() == 1, DataError, "tokenizer-info needs exactly one FILE");
  const std::unique_ptr<memento::Tokenizer> tok = memento::load_tokenizer(args.inputs[0]);
  std::printf("%s\n", tok->describe().c_str());
  if (args.has("--text")) {
    const std::vector<int32_t> ids = tok->encode(args.get("--text"));
    std::printf("%zu ids:", ids.size());
    for (int32_t id : ids) std::printf(" %d", id);
    std::printf("\ndecoded: %s\n", tok->decode(ids).c_str());
  }
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
    if (std::string_view(argv[1]) == "export-hf")
      return memento::run_export_hf(std::vector<std::string>(argv + 2, argv + argc));
    const Args args = parse_args(argc, argv);
    if (args.command == "train-tokenizer") return train_tokenizer(args);
    if (args.command == "tokenize") return tokenize(args);
    if (args.command == "tokenizer-info") return tokenizer_info(args);
    if (args.command == "info") return info(args);
    throw DataError(memento::detail::concat("unknown command \"", args.command, "\" (see --help)"));
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "trainer-data: error: %s\n", e.what());
    return 1;
  }
}

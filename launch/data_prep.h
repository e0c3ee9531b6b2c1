// `trainer-data tokenize`: documents from text and JSONL files, encoded by any tokenizer on many
// threads, split into train and validation at random, written as sharded llm.c or Megatron
// files. The output is byte-identical for any thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/data/document_reader.h"
#include "core/data/token_dataset.h"
#include "core/data/token_writer.h"
#include "core/data/tokenizer.h"

namespace memento {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  DocumentReaderOptions reader;
  std::string out_prefix;  // writes OUT_train_000000.bin, ..., OUT_val_000000.bin, ...
  TokenFormat format = TokenFormat::kLlmc;
  double val_fraction = 0.05;
  uint64_t seed = 1;
  int64_t shard_tokens = ShardedTokenWriter::kDefaultShardTokens;
  int threads = 0;          // 0: every core this process may use
  bool append_eos = false;  // end each document with EOS too (Megatron's --append-eod)
  bool progress = true;     // the bar on stderr
  int64_t batch_bytes = 0;  // text per batch of parallel work; 0: a default by thread count
};

struct SplitReport {
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<std::string> files;
};

struct TokenizeReport {
  SplitReport train;
  SplitReport val;
  int64_t input_bytes = 0;  // of the documents' text
  int64_t removed_stale_files = 0;
  int threads = 0;
  double seconds = 0;
};

// Whether document `index` (counting the documents kept, in input order) goes to validation:
// a keyed hash of (seed, index) below fraction, independent of threads and batching.
bool is_validation_document(uint64_t seed, int64_t index, double fraction);

// The cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

// Encodes every document as [document_start_id] + encode(text) (+ [eos] with append_eos) and
// writes the splits. Throws DataError on bad options or input (naming file and line), and when
// a split that was asked for receives no document.
TokenizeReport tokenize_corpus(const TokenizeOptions& options, const Tokenizer& tokenizer);

// Every document of the inputs, in order, with its text (for training a tokenizer). Adds the
// bytes read to *bytes when given.
std::vector<std::string> read_all_documents(const std::vector<std::string>& inputs,
                                            const DocumentReaderOptions& options,
                                            int64_t* bytes = nullptr);

// "PREFIX_train_{000000..000003}.bin (4 shards)" for the report lines.
std::string describe_files(const std::vector<std::string>& files);

}  // namespace memento

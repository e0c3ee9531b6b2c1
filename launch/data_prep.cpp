#include "launch/data_prep.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/rng.h"
#include "launch/progress_bar.h"

namespace memento {
namespace {

// Each tokenizer thread gets about this much text per batch (and a batch at least kMinBatch):
// enough that threads rarely wait for the slowest document, little enough to bound memory.
constexpr int64_t kBatchBytesPerThread = int64_t{4} << 20;
constexpr int64_t kMinBatchBytes = int64_t{16} << 20;
constexpr double kTwoPow53 = 9007199254740992.0;

struct Encoded {
  std::vector<int32_t> ids;
  int64_t text_bytes = 0;
  bool skip = false;
  std::exception_ptr error;
};

// Runs f(i, scratch) for i in [0, n) on `threads` threads (the caller's included), each item
// taken from a shared counter.
template <typename F>
void parallel_for(int threads, size_t n, const F& f) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    std::string scratch;
    for (size_t i; (i = next.fetch_add(1)) < n;) f(i, scratch);
  };
  std::vector<std::thread> pool;
  const size_t extra = std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), n);
  for (size_t t = 1; t < extra; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
}

void ensure_parent_dir(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
}

}  // namespace

bool is_validation_document(uint64_t seed, int64_t index, double fraction) {
  if (fraction <= 0) return false;
  static const uint64_t kStream = stream_id("trainer-data/validation-split");
  const auto r = philox4x32(seed, kStream, static_cast<uint64_t>(index));
  const uint64_t bits = ((static_cast<uint64_t>(r[0]) << 32) | r[1]) >> 11;
  return static_cast<double>(bits) / kTwoPow53 < fraction;
}

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

TokenizeReport tokenize_corpus(const TokenizeOptions& o, const Tokenizer& tok) {
  MEMENTO_EXPECT(!o.out_prefix.empty(), DataError, "tokenize needs --out PREFIX");
  MEMENTO_EXPECT(o.val_fraction >= 0 && o.val_fraction < 1, DataError,
                 "--val-fraction: expected a number in [0, 1), got ", o.val_fraction);
  MEMENTO_EXPECT(o.threads >= 0, DataError, "--threads: expected a count >= 1, got ", o.threads);
  const std::optional<int32_t> start = document_start_id(tok);
  const std::optional<int32_t> eos = tok.eos_id();
  MEMENTO_EXPECT(!o.append_eos || eos.has_value(), DataError,
                 "--append-eos: the tokenizer has no EOS token (", tok.describe(), ")");
  const auto t0 = std::chrono::steady_clock::now();
  TokenizeReport report;
  report.threads = o.threads > 0 ? o.threads : available_cores();

  DocumentReader reader(o.inputs, o.reader);
  ensure_parent_dir(o.out_prefix);
  ShardedTokenWriter train(o.out_prefix + "_train", o.format, o.shard_tokens, tok.vocab_size());
  // Written even when empty, so that a previous run's validation shards are removed.
  ShardedTokenWriter val(o.out_prefix + "_val", o.format, o.shard_tokens, tok.vocab_size());
  std::optional<ProgressBar> bar;
  if (o.progress) bar.emplace("tokenize", reader.total_bytes(), ProgressUnit::kBytes);

  const int64_t batch_bytes =
      o.batch_bytes > 0
          ? o.batch_bytes
          : std::max(kMinBatchBytes, static_cast<int64_t>(report.threads) * kBatchBytesPerThread);
  DocumentBatch batch;
  std::vector<Encoded> encoded;
  int64_t index = 0;  // of the next document kept
  while (reader.next(batch, batch_bytes)) {
    encoded.assign(batch.documents.size(), Encoded{});
    parallel_for(report.threads, batch.documents.size(), [&](size_t i, std::string& scratch) {
      Encoded& e = encoded[i];
      try {
        const std::string_view text = reader.document_text(batch.documents[i], scratch);
        e.text_bytes = static_cast<int64_t>(text.size());
        if (is_blank(text)) {
          e.skip = true;
          return;
        }
        if (start) e.ids.push_back(*start);
        const std::vector<int32_t> body = tok.encode(text);
        e.ids.insert(e.ids.end(), body.begin(), body.end());
        if (o.append_eos) e.ids.push_back(*eos);
      } catch (...) {
        e.error = std::current_exception();
      }
    });
    // In document order, so that the first error and every split are the same for any
    // thread count.
    for (Encoded& e : encoded) {
      if (e.error) std::rethrow_exception(e.error);
      if (e.skip) continue;
      report.input_bytes += e.text_bytes;
      ShardedTokenWriter& split =
          is_validation_document(o.seed, index++, o.val_fraction) ? val : train;
      split.add_document(e.ids);
    }
    if (bar) bar->update(reader.bytes_done());
  }
  train.finish();
  val.finish();
  if (bar) bar->finish();

  report.train = {train.documents(), train.tokens(), train.files()};
  report.val = {val.documents(), val.tokens(), val.files()};
  report.removed_stale_files = train.removed_stale_files() + val.removed_stale_files();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t kept = report.train.documents + report.val.documents;
  MEMENTO_EXPECT(kept > 0, DataError, "no text documents found in the inputs (",
                 reader.files().size(), " files, ", reader.skipped_binary(), " binary)");
  MEMENTO_EXPECT(report.train.documents > 0, DataError, "--val-fraction ", o.val_fraction,
                 " put all ", kept, " documents in validation; lower it or add documents");
  MEMENTO_EXPECT(o.val_fraction == 0 || report.val.documents > 0, DataError, "--val-fraction ",
                 o.val_fraction, " put none of the ", kept,
                 " documents in validation (the split is random by --seed); raise it, add "
                 "documents or pass --val-fraction 0");
  return report;
}

std::vector<std::string> read_all_documents(const std::vector<std::string>& inputs,
                                            const DocumentReaderOptions& options, int64_t* bytes) {
  DocumentReader reader(inputs, options);
  std::vector<std::string> documents;
  DocumentBatch batch;
  std::string scratch;
  while (reader.next(batch, kMinBatchBytes)) {
    for (const RawDocument& doc : batch.documents) {
      const std::string_view text = reader.document_text(doc, scratch);
      if (is_blank(text)) continue;
      documents.emplace_back(text);
      if (bytes != nullptr) *bytes += static_cast<int64_t>(text.size());
    }
  }
  MEMENTO_EXPECT(!documents.empty(), DataError, "no text documents found in the inputs (",
                 reader.files().size(), " files, ", reader.skipped_binary(), " binary)");
  return documents;
}

std::string describe_files(const std::vector<std::string>& files) {
  if (files.empty()) return "no files";
  if (files.size() == 1) return files[0];
  // Shard files differ only in their number (and extension): name the range.
  const std::string& first = files.front();
  const std::string& last = files.back();
  const size_t ext = first.rfind('.');
  const size_t digits = first.rfind('_', ext) + 1;
  const bool megatron = files.size() >= 2 && files[1].ends_with(".idx");
  const size_t shards = megatron ? files.size() / 2 : files.size();
  if (shards == 1) return first.substr(0, ext) + ".{bin,idx}";
  return detail::concat(first.substr(0, digits), "{", first.substr(digits, ext - digits), "..",
                        last.substr(digits, ext - digits), "}",
                        megatron ? ".{bin,idx}" : first.substr(ext), " (", shards, " shards)");
}

}  // namespace memento

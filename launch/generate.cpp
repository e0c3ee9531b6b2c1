#include "launch/generate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>

#include "checkpoint/hdf5_checkpoint.h"
#include "core/log.h"
#include "core/rng.h"
#include "launch/config.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

// Picks the next token from one row of logits (V).
int32_t sample_token(const float* logits, int64_t V, const SampleArgs& args, uint64_t draw) {
  if (args.temperature == 0.0)
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = args.top_k > 0 ? std::min(args.top_k, V) : V;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(static_cast<size_t>(k));
  double total = 0;
  for (int64_t i = 0; i < k; ++i) {
    p[i] = std::exp((logits[ids[i]] - logits[ids[0]]) / args.temperature);
    total += p[i];
  }
  double u = uniform01(args.seed, stream_id("sample"), draw) * total;
  for (int64_t i = 0; i < k; ++i) {
    u -= p[i];
    if (u <= 0) return ids[i];
  }
  return ids[k - 1];
}

std::string resolve_checkpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / "rank_00000.h5")) return path;
  const auto latest = checkpoint::find_latest(path);
  MEMENTO_EXPECT(
      latest.has_value(), CheckpointError, path,
      ": neither a checkpoint directory nor a checkpoint root with a complete checkpoint");
  return *latest;
}

}  // namespace

std::string generate(LlamaModel& model, const Tokenizer& tokenizer, const SampleArgs& args) {
  const int64_t model_vocab = model.config().vocab_size;
  MEMENTO_EXPECT(tokenizer.vocab_size() <= model_vocab, DataError, "the tokenizer has ",
                 tokenizer.vocab_size(), " ids but the model's vocab_size is ", model_vocab, " (",
                 tokenizer.describe(), ")");
  std::vector<int32_t> ids;
  if (const auto start = document_start_id(tokenizer)) ids.push_back(*start);
  const std::vector<int32_t> prompt = tokenizer.encode(args.prompt);
  ids.insert(ids.end(), prompt.begin(), prompt.end());
  MEMENTO_EXPECT(!ids.empty(), DataError, "an empty prompt needs a tokenizer with BOS or EOS");
  const std::optional<int32_t> eos = tokenizer.eos_id();
  // Rows past the tokenizer's ids (a vocabulary padded for speed) are never sampled.
  const int64_t V = tokenizer.vocab_size();
  const int64_t context = model.config().max_seq_len;
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < args.tokens; ++i) {
    const int64_t T = std::min<int64_t>(static_cast<int64_t>(ids.size()), context);
    Tensor tokens = Tensor::empty(Shape{1, T}, DType::kI32);
    std::copy(ids.end() - T, ids.end(), tokens.data<int32_t>());
    const Tensor logits = model.forward_logits(tokens);  // (1, T, V)
    Tensor last = Tensor::empty(Shape{model_vocab}, DType::kF32);
    copy(logits.view().reshape(Shape{T, model_vocab}).slice(T - 1, T).reshape(Shape{model_vocab}),
         last);
    const int32_t next = sample_token(last.data<float>(), V, args, static_cast<uint64_t>(i));
    if (next == eos) break;
    ids.push_back(next);
    generated.push_back(next);
  }
  return tokenizer.decode(generated);
}

int run_sample(const SampleArgs& args) {
  const std::string dir = resolve_checkpoint(args.checkpoint);
  ModelConfig model_config =
      parse_model_config(checkpoint::read_string(dir, "meta/config"), dir + "/meta/config");
  // Sampling runs on the CPU in the master dtype, whatever device the run trained on.
  model_config.device = "cpu";
  model_config.dtype = model_config.master_dtype();
  LlamaModel model(model_config);
  model.params().allocate(model_config.dtype);
  checkpoint::StateRegistry registry;
  for (const auto& e : model.params().entries())
    registry.add_tensor("model/" + e.name,
                        model.params().flat_values().flat_range(e.offset, e.shape));
  checkpoint::load_checkpoint(registry, dir, 0,
                              checkpoint::LoadOptions{.allow_unregistered = true});

  std::unique_ptr<Tokenizer> tokenizer;
  if (!args.tokenizer.empty()) {
    tokenizer = load_tokenizer(args.tokenizer);
  } else {
    const std::string stored = checkpoint::read_string(dir, "meta/tokenizer");
    MEMENTO_EXPECT(!stored.empty(), CheckpointError, dir,
                   ": the run recorded no tokenizer (data.tokenizer); pass --tokenizer FILE");
    tokenizer = tokenizer_from_serialized(stored, dir + ": meta/tokenizer");
  }

  const std::string text = generate(model, *tokenizer, args);
  std::printf("%s%s\n", args.prompt.c_str(), text.c_str());
  return 0;
}

}  // namespace memento

#include "launch/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"

namespace memento {
namespace {

// Parses text as "t.yaml" and returns the ConfigError message ("" when it parsed).
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, overrides, "t.yaml");
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFromAnEmptyFile) {
  const Config c = parse_config("", {}, "t.yaml");
  EXPECT_EQ(c.run.name, "run");
  EXPECT_EQ(c.run.seed, 1234u);
  EXPECT_EQ(c.train.seq_len, 256);
  EXPECT_EQ(c.optim.schedule, "cosine");
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.checkpoint.dir, "runs/run/checkpoints");  // resolved from run.out_dir
  EXPECT_EQ(c.memory.activation_policy, "keep");
  EXPECT_EQ(c.parallel.world_size(), 1);
  EXPECT_EQ(c.train.grad_accum(1), 2);
  EXPECT_EQ(c.model.layer_pattern, std::vector<AttentionKind>{AttentionKind::kSoftmax});
  EXPECT_TRUE(parse_config("# only a comment\n", {}, "t.yaml") == c);
  EXPECT_TRUE(parse_config("optim:\n", {}, "t.yaml") == c);  // an empty section keeps defaults
}

TEST(Config, ReadsEveryKind) {
  const Config c = parse_config(R"(
run: {name: exp, out_dir: /tmp/exp, seed: 7}
model:
  dim: 64
  n_heads: 4
  n_kv_heads: 2
  norm_eps: 1e-6
  tie_embeddings: true
  layer_pattern: [linear, softmax]
  linear_attention: {decay: false, chunk: 32}
  dtype: f64
data: {train: a.bin, val_fraction: 0.1}
train: {global_batch: 16, micro_batch: 4}
checkpoint: {dir: ckpt, every: 10}
parallel: {dp: 2}
)",
                                {}, "t.yaml");
  EXPECT_EQ(c.run.name, "exp");
  EXPECT_EQ(c.run.seed, 7u);
  EXPECT_EQ(c.model.n_kv_heads, 2);
  EXPECT_DOUBLE_EQ(c.model.norm_eps, 1e-6);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.layer_pattern,
            (std::vector<AttentionKind>{AttentionKind::kLinear, AttentionKind::kSoftmax}));
  EXPECT_FALSE(c.model.linear_decay);
  EXPECT_TRUE(c.model.linear_output_norm);
  EXPECT_EQ(c.model.linear_chunk, 32);
  EXPECT_EQ(c.model.dtype, DType::kF64);
  EXPECT_EQ(c.data.train, "a.bin");
  EXPECT_EQ(c.checkpoint.dir, "ckpt");
  EXPECT_EQ(c.parallel.dp, 2);  // dp > 1 parses; the launcher checks the world size
  EXPECT_EQ(c.train.grad_accum(c.parallel.dp), 2);
}

TEST(Config, UnknownKeysAreErrorsWithSuggestions) {
  EXPECT_EQ(error_of("train:\n  steps: 10\n  micro_batchs: 4\n"),
            "t.yaml:3: unknown key 'train.micro_batchs' (did you mean 'train.micro_batch'?)");
  EXPECT_EQ(error_of("trian:\n  steps: 10\n"),
            "t.yaml:1: unknown key 'trian' (did you mean 'train'?)");
  EXPECT_EQ(error_of("model: {seq_len: 10}\n"),
            "t.yaml:1: unknown key 'model.seq_len' (did you mean 'train.seq_len'?)");
  EXPECT_EQ(error_of("optim: {learning_rate: 1}\n"), "t.yaml:1: unknown key 'optim.learning_rate'");
  EXPECT_EQ(error_of("model:\n  linear_attention:\n    chunks: 8\n"),
            "t.yaml:3: unknown key 'model.linear_attention.chunks' (did you mean "
            "'model.linear_attention.chunk'?)");
  EXPECT_EQ(error_of("train:\n  steps: 1\n  steps: 2\n"), "t.yaml:3: duplicate key 'train.steps'");
}

TEST(Config, WrongTypesNameTheKeyPath) {
  EXPECT_EQ(error_of("train:\n  steps: many\n"),
            "t.yaml:2: train.steps: expected an integer, got 'many'");
  EXPECT_EQ(error_of("train: {steps: 3.5}"),
            "t.yaml:1: train.steps: expected an integer, got '3.5'");
  EXPECT_EQ(error_of("train: {steps: 99999999999999999999}"),
            "t.yaml:1: train.steps: integer out of range: '99999999999999999999'");
  EXPECT_EQ(error_of("run: {seed: -1}"),
            "t.yaml:1: run.seed: expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of("optim: {lr: fast}"), "t.yaml:1: optim.lr: expected a number, got 'fast'");
  EXPECT_EQ(error_of("optim: {lr: .nan}"), "t.yaml:1: optim.lr: expected a number, got '.nan'");
  EXPECT_EQ(error_of("model: {tie_embeddings: yes}"),
            "t.yaml:1: model.tie_embeddings: expected true or false, got 'yes'");
  EXPECT_EQ(error_of("model: {dim: [1, 2]}"),
            "t.yaml:1: model.dim: expected an integer, got a list");
  EXPECT_EQ(error_of("run: {name: {a: 1}}"), "t.yaml:1: run.name: expected a string, got a map");
  EXPECT_EQ(error_of("model:\n  layer_pattern: [linear, lin]\n"),
            "t.yaml:2: model.layer_pattern[1]: expected softmax or linear, got 'lin'");
  EXPECT_EQ(error_of("model: {dtype: f33}"),
            "t.yaml:1: model.dtype: expected a dtype name (f32, f64, bf16), got 'f33'");
  EXPECT_EQ(error_of("model:\n  linear_attention: {decay: on}\n"),
            "t.yaml:2: model.linear_attention.decay: expected true or false, got 'on'");
  EXPECT_DOUBLE_EQ(parse_config("optim: {lr: 1}", {}, "t").optim.lr, 1.0);  // ints are numbers
  EXPECT_EQ(parse_config("train: {steps: +12}", {}, "t").train.steps, 12);
}

TEST(Config, SectionsMustBeMaps) {
  EXPECT_EQ(error_of("train: 5\n"), "t.yaml:1: train: expected a map of keys, got '5'");
  EXPECT_EQ(error_of("model:\n  linear_attention: [1]\n"),
            "t.yaml:2: model.linear_attention: expected a map of keys, got a list");
  EXPECT_EQ(error_of("- a\n- b\n"),
            "t.yaml:1: expected a map of sections (run, model, data, ...), got a list");
  EXPECT_NE(error_of("train: {steps: 1\n").find("t.yaml:"), std::string::npos);  // bad YAML
  EXPECT_NE(error_of("train: {steps: 1\n").find("invalid YAML"), std::string::npos);
}

TEST(Config, InconsistentValues) {
  EXPECT_EQ(error_of("train:\n  micro_batch: 4\n  global_batch: 10\n"),
            "t.yaml:3: train.global_batch = 10 is not divisible by train.micro_batch × "
            "parallel.dp = 4 × 1");
  EXPECT_EQ(error_of("train: {micro_batch: 4, global_batch: 4}\nparallel: {dp: 2}\n"),
            "t.yaml:1: train.global_batch = 4 is not divisible by train.micro_batch × "
            "parallel.dp = 4 × 2");
  EXPECT_EQ(error_of("train:\n  seq_len: 512\n"),
            "t.yaml:2: train.seq_len = 512 exceeds model.max_seq_len = 256");
  EXPECT_EQ(error_of("optim:\n  lr: 0\n"), "t.yaml:2: optim.lr: must be positive, got 0");
  EXPECT_EQ(error_of("optim:\n  lr: -1\n"), "t.yaml:2: optim.lr: must be positive, got -1");
  EXPECT_EQ(error_of("optim:\n  lr: 0.001\n  min_lr: 0.01\n"),
            "t.yaml:3: optim.min_lr = 0.01 exceeds optim.lr = 0.001");
  EXPECT_EQ(error_of("optim:\n  warmup_steps: 200\n"),
            "t.yaml:2: optim.warmup_steps = 200 exceeds train.steps = 100");
  EXPECT_EQ(error_of("optim:\n  schedule: cosin\n"),
            "t.yaml:2: optim.schedule: unknown value 'cosin'; supported: cosine, linear, constant");
  EXPECT_EQ(error_of("optim: {beta2: 1.0}"), "t.yaml:1: optim.beta2: must be in [0, 1), got 1");
  EXPECT_EQ(error_of("memory:\n  activation_policy: swap\n"),
            "t.yaml:2: memory.activation_policy: 'swap' is not available yet; supported: keep");
  EXPECT_EQ(error_of("parallel:\n  tp: 2\n"),
            "t.yaml:2: parallel.tp = 2: tensor parallelism is not available in this build yet");
  EXPECT_EQ(error_of("parallel: {pp: 4}"),
            "t.yaml:1: parallel.pp = 4: pipeline parallelism is not available in this build yet");
  EXPECT_EQ(error_of("parallel: {cp: 2}"),
            "t.yaml:1: parallel.cp = 2: context parallelism is not available in this build yet");
  EXPECT_EQ(error_of("parallel: {nccl_timeout_s: -5}"),
            "t.yaml:1: parallel.nccl_timeout_s: must be a number of seconds >= 0 (0: no deadline), "
            "got -5");
  EXPECT_EQ(error_of("data: {format: parquet}"),
            "t.yaml:1: data.format: unknown value 'parquet'; supported: auto, llmc, megatron");
  EXPECT_EQ(error_of("checkpoint: {keep: 0}"),
            "t.yaml:1: checkpoint.keep: must be positive, got 0");
  // A key left at its default has no line to point at.
  EXPECT_EQ(error_of("model: {max_seq_len: 64}"),
            "t.yaml: train.seq_len = 256 exceeds model.max_seq_len = 64");
  // The model's own checks (core/model/model_config.h) are located the same way.
  EXPECT_EQ(error_of("model:\n  dim: 100\n  n_heads: 3\n"),
            "t.yaml:2: model.dim: 100 is not divisible by model.n_heads = 3");
  EXPECT_EQ(error_of("model:\n  linear_attention:\n    chunk: 0\n"),
            "t.yaml:3: model.linear_attention.chunk: must be positive, got 0");
  EXPECT_EQ(error_of("model: {dtype: bf16}"),
            "t.yaml:1: model.dtype: the CPU backend computes in f32 or f64, got bf16 (bf16 mixed "
            "precision needs model.device: cuda)");
  EXPECT_EQ(error_of("model: {device: gpu}"),
            "t.yaml:1: model.device: expected cpu or cuda, got 'gpu'");
  EXPECT_EQ(error_of("model: {device: cuda, dim: 96, n_heads: 2, n_kv_heads: 2, "
                     "layer_pattern: [linear]}"),
            "t.yaml:1: model.n_heads: linear attention on a GPU needs a head size (dim / n_heads) "
            "of 16, 32, 64 or 128, got 48");
  EXPECT_EQ(error_of("model: {device: cuda, dim: 1024, n_heads: 2, n_kv_heads: 2}"),
            "t.yaml:1: model.n_heads: softmax attention on a GPU needs a head size of at most "
            "256, got 512");
  EXPECT_EQ(error_of("model: {device: cuda, dtype: f64}"),
            "t.yaml:1: model.dtype: the CUDA backend computes in bf16 (mixed precision) or f32, "
            "got f64");
}

TEST(Config, TrainDataIsRequiredOnlyToTrain) {
  const Config c = parse_config("", {}, "t.yaml");
  try {
    c.data.validate_for_training();
    ADD_FAILURE() << "no error for a missing data.train";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.train: required"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(parse_config("data: {train: x.bin}", {}, "t").data.validate_for_training());
}

TEST(Config, SetOverridesScalarsNestedKeysListsAndSections) {
  const Config c = parse_config(
      "train:\n  steps: 10\n",
      {"train.steps=20", "model.linear_attention.chunk=16", "model.layer_pattern=[linear,softmax]",
       "run.name=x y", "optim={lr: 0.01, min_lr: 0.001}", "run.out_dir=/o"},
      "t.yaml");
  EXPECT_EQ(c.train.steps, 20);
  EXPECT_EQ(c.model.linear_chunk, 16);
  EXPECT_EQ(c.model.layer_pattern,
            (std::vector<AttentionKind>{AttentionKind::kLinear, AttentionKind::kSoftmax}));
  EXPECT_EQ(c.run.name, "x y");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.01);
  EXPECT_DOUBLE_EQ(c.optim.min_lr, 0.001);
  EXPECT_EQ(c.optim.schedule, "cosine");          // a section map sets its keys, the rest stay
  EXPECT_EQ(c.checkpoint.dir, "/o/checkpoints");  // defaults resolve after the overrides
  EXPECT_EQ(parse_config("", {"model.layer_pattern=linear"}, "t").model.layer_pattern,
            std::vector<AttentionKind>{AttentionKind::kLinear});
  EXPECT_EQ(parse_config("", {"data.val="}, "t").data.val, "");
  // The later --set wins.
  EXPECT_EQ(parse_config("", {"train.steps=50", "train.steps=60"}, "t").train.steps, 60);
}

TEST(Config, BadSetsAreErrors) {
  EXPECT_EQ(error_of("", {"train.steps"}),
            "t.yaml (--set train.steps): expected --set key.path=value");
  EXPECT_EQ(error_of("", {"=3"}), "t.yaml (--set =3): expected --set key.path=value");
  EXPECT_EQ(error_of("", {"train.micro_batchs=4"}),
            "t.yaml (--set train.micro_batchs=4): unknown key 'train.micro_batchs' (did you mean "
            "'train.micro_batch'?)");
  EXPECT_EQ(error_of("", {"train.steps.x=4"}),
            "t.yaml (--set train.steps.x=4): unknown key 'train.steps.x' (did you mean "
            "'train.steps'?)");
  EXPECT_EQ(error_of("", {"model.linear_attention={chunks: 3}"}),
            "t.yaml (--set model.linear_attention={chunks: 3}): unknown key "
            "'model.linear_attention.chunks' (did you mean 'model.linear_attention.chunk'?)");
  // Typed and validated like the file, and the message names the --set.
  EXPECT_EQ(error_of("train:\n  steps: 10\n", {"train.steps=many"}),
            "t.yaml (--set train.steps=many): train.steps: expected an integer, got 'many'");
  EXPECT_EQ(error_of("", {"train.global_batch=10"}),
            "t.yaml (--set train.global_batch=10): train.global_batch = 10 is not divisible by "
            "train.micro_batch × parallel.dp = 4 × 1");
  EXPECT_EQ(error_of("", {"model.layer_pattern=[linear, x]"}),
            "t.yaml (--set model.layer_pattern=[linear, x]): model.layer_pattern[1]: expected "
            "softmax or linear, got 'x'");
  EXPECT_EQ(error_of("train: 5\n", {"train.steps=3"}),
            "t.yaml (--set train.steps=3): cannot set 'train.steps': t.yaml:1 sets 'train' to "
            "'5', not a map");
  EXPECT_NE(error_of("", {"train.steps=[1"}).find("the value is not valid YAML"),
            std::string::npos);
}

TEST(Config, ToYamlRoundTrips) {
  Config c;
  c.run.name = "quote \" back\\slash\ttab";
  c.run.seed = 18446744073709551615ull;
  c.model.layer_pattern = {AttentionKind::kLinear, AttentionKind::kLinear, AttentionKind::kSoftmax};
  c.model.linear_output_norm = false;
  c.model.dtype = DType::kF64;
  c.model.rope_theta = 500000;
  c.model.init_std = 0.1 + 0.2;  // not a short decimal
  c.data.val_fraction = 1.0 / 3;
  c.optim.eps = 1e-12;
  c.optim.lr = 3e-4;
  c.memory.budget_bytes = int64_t{1} << 40;
  c.parallel.dp = 2;
  c.checkpoint.dir = "ck";
  const std::string text = to_yaml(c);
  const Config back = parse_config(text, {}, "resolved");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(to_yaml(back), text);
  EXPECT_NE(text.find("  lr: 0.0003\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  layer_pattern: [linear, linear, softmax]\n"), std::string::npos);
  EXPECT_NE(text.find("  rope_theta: 500000.0\n"), std::string::npos);
  Config other = c;
  other.model.dim = 64;
  EXPECT_FALSE(other == c);
}

TEST(Config, ModelYamlAndDiff) {
  ModelConfig a;
  const std::string text = model_to_yaml(a);
  EXPECT_EQ(text.rfind("model:\n", 0), 0u) << text;
  EXPECT_TRUE(diff_model(parse_model_config(text, "ckpt"), a).empty());
  // The model section of a whole resolved config reads too; other sections are ignored.
  Config c;
  c.model.dim = 512;
  EXPECT_EQ(parse_model_config(to_yaml(c), "ckpt").dim, 512);

  ModelConfig b = a;
  b.dim = 512;
  b.layer_pattern = {AttentionKind::kLinear};
  b.linear_chunk = 32;
  EXPECT_EQ(diff_model(a, b), (std::vector<std::string>{
                                  "model.dim: 128 vs 512",
                                  "model.layer_pattern: [softmax] vs [linear]",
                                  "model.linear_attention.chunk: 64 vs 32",
                              }));
  try {
    parse_model_config("model: {dimm: 3}", "ckpt/meta");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "ckpt/meta:1: unknown key 'model.dimm' (did you mean 'model.dim'?)");
  }
  EXPECT_THROW(parse_model_config("run: {}", "ckpt/meta"), ConfigError);
}

TEST(Config, LoadConfigNamesTheFile) {
  try {
    load_config("/nonexistent/x.yaml", {});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/x.yaml: cannot open the config file");
  }
}

// Parameters of a Llama-style model with softmax attention everywhere (GQA, SwiGLU, RMSNorm).
int64_t llama_parameters(const ModelConfig& m) {
  const int64_t kv = m.n_kv_heads * m.head_size();
  const int64_t per_layer = 2 * m.dim * m.dim + 2 * m.dim * kv + 3 * m.dim * m.ffn_dim + 2 * m.dim;
  const int64_t embeddings = (m.tie_embeddings ? 1 : 2) * m.vocab_size * m.dim;
  return embeddings + m.n_layers * per_layer + m.dim;
}

TEST(Config, EveryShippedConfigValidates) {
  const std::filesystem::path dir = std::filesystem::path(MEMENTO_SOURCE_DIR) / "configs";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const Config c = load_config(entry.path().string(), {});
    EXPECT_EQ(c.run.out_dir, "runs/" + entry.path().stem().string());
    EXPECT_TRUE(parse_config(to_yaml(c), {}, "resolved") == c);
    ++count;
  }
  EXPECT_GE(count, 8);

  const Config tiny = load_config((dir / "tiny.yaml").string(), {});
  EXPECT_EQ(tiny.data.train, "data/fortunes_train.bin");
  EXPECT_EQ(tiny.model.n_kv_heads, 2);
  EXPECT_EQ(tiny.train.grad_accum(1), 2);
  EXPECT_EQ(tiny.checkpoint.dir, "runs/tiny/checkpoints");
  EXPECT_NO_THROW(tiny.data.validate_for_training());
  const Config hybrid = load_config((dir / "tiny-hybrid.yaml").string(), {});
  EXPECT_EQ(hybrid.model.layer_kind(3), AttentionKind::kSoftmax);
  EXPECT_EQ(hybrid.model.layer_kind(2), AttentionKind::kLinear);
  EXPECT_TRUE(diff_model(tiny.model, hybrid.model).size() == 1);

  const Config llama7b = load_config((dir / "llama7b.yaml").string(), {});
  EXPECT_NEAR(static_cast<double>(llama_parameters(llama7b.model)), 6.74e9, 0.01e9);
  const Config llama134m = load_config((dir / "llama-134m.yaml").string(), {});
  EXPECT_NEAR(static_cast<double>(llama_parameters(llama134m.model)), 134e6, 1e6);
}

}  // namespace
}  // namespace memento

// Hugging Face export and import: config.json both ways, trainer checkpoints (one rank and two)
// exported and loaded back bit for bit (untied, tied, GQA, hybrid, sharded, bf16), the errors of
// a directory that does not fit the model, and `trainer-data export-hf` end to end.
#include "launch/hf_weights.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "checkpoint/checkpoint_test_util.h"
#include "checkpoint/safetensors.h"
#include "core/model/llama.h"
#include "launch/config.h"
#include "launch/e2e_testing.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using checkpoint::test_util::ScratchDir;
using nlohmann::json;

ModelConfig small_model() {
  ModelConfig m;
  m.vocab_size = 256;
  m.dim = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;  // GQA
  m.ffn_dim = 160;
  m.max_seq_len = 64;
  m.rope_theta = 500000.0;
  m.norm_eps = 1e-6;
  return m;
}

ModelConfig tied_model() {
  ModelConfig m = small_model();
  m.tie_embeddings = true;
  return m;
}

ModelConfig hybrid_model() {
  ModelConfig m = small_model();
  m.layer_pattern = {AttentionKind::kLinear, AttentionKind::kSoftmax};
  m.linear_decay = false;
  m.linear_chunk = 16;
  return m;
}

// A model with every parameter drawn at random (norms too, so that no two tensors are alike).
std::unique_ptr<LlamaModel> random_model(const ModelConfig& config, uint64_t seed) {
  auto model = std::make_unique<LlamaModel>(config);
  model->params().allocate(config.dtype);
  model->params().initialize(seed);
  const auto& entries = model->params().entries();
  for (size_t i = 0; i < entries.size(); ++i) {
    std::mt19937_64 rng(seed * 1000 + i);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    const TensorView v = model->params().value(ParamRef{static_cast<int>(i)});
    for (int64_t k = 0; k < v.numel(); ++k) v.data<float>()[k] = normal(rng);
  }
  return model;
}

// Saves `model` as the trainer does ("model/<name>", an optimizer state, meta/config), as `world`
// data-parallel ranks each holding a slice of the flat parameters.
void save_trainer_checkpoint(const LlamaModel& model, const std::string& root, int world) {
  checkpoint::StateRegistry full;
  for (size_t i = 0; i < model.params().entries().size(); ++i) {
    const auto& e = model.params().entries()[i];
    full.add_tensor("model/" + e.name, model.params().value(ParamRef{static_cast<int>(i)}));
  }
  Tensor exp_avg = Tensor::zeros({model.config().dim}, DType::kF32);
  full.add_tensor("optim/exp_avg/model.norm.weight", exp_avg);
  std::string meta = model_to_yaml(model.config());
  full.add_string("meta/config", &meta);
  if (world == 1) return checkpoint::save_checkpoint(full, root, 7);
  const auto bounds =
      checkpoint::test_util::even_bounds(checkpoint::test_util::total_elements(full), world);
  std::vector<checkpoint::StateRegistry> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(checkpoint::test_util::shard_of(full, bounds, r));
  for (const auto& error : checkpoint::test_util::save_on_threads(ranks, root, 7))
    ASSERT_EQ(error, "");
}

void expect_identical_params(const ParameterSet& a, const ParameterSet& b) {
  ASSERT_EQ(a.entries().size(), b.entries().size());
  for (size_t i = 0; i < a.entries().size(); ++i) {
    const TensorView x = a.value(ParamRef{static_cast<int>(i)});
    const TensorView y = b.value(ParamRef{static_cast<int>(i)});
    ASSERT_EQ(x.bytes(), y.bytes()) << a.entries()[i].name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.bytes()), 0) << a.entries()[i].name;
  }
}

std::string read_text(const std::string& path) { return testing::read_file(path); }

template <typename Fn>
std::string checkpoint_error(Fn&& fn) {
  return checkpoint::test_util::error_of(std::forward<Fn>(fn));
}

TEST(HfConfigTest, WritesATransformersLlamaConfig) {
  const json j = json::parse(hf_config_json(small_model(), DType::kBF16));
  EXPECT_EQ(j["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 64);
  EXPECT_EQ(j["intermediate_size"], 160);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 16);
  EXPECT_EQ(j["vocab_size"], 256);
  EXPECT_EQ(j["max_position_embeddings"], 64);
  EXPECT_EQ(j["rms_norm_eps"], 1e-6);
  EXPECT_EQ(j["rope_theta"], 500000.0);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_FALSE(j.contains("memento_layer_pattern"));

  const json h = json::parse(hf_config_json(hybrid_model(), DType::kF32));
  EXPECT_EQ(h["model_type"], "memento_llama");  // transformers must refuse it, not run softmax
  EXPECT_EQ(h["architectures"], json::array({"MementoLlamaForCausalLM"}));
  EXPECT_EQ(h["memento_layer_pattern"], json::array({"linear", "softmax"}));
  EXPECT_EQ(h["memento_linear_attention"]["decay"], false);
  EXPECT_EQ(h["memento_linear_attention"]["output_norm"], true);
  EXPECT_EQ(h["memento_linear_attention"]["chunk"], 16);
  EXPECT_EQ(h["torch_dtype"], "float32");
}

TEST(HfConfigTest, RoundTripsEveryModelKey) {
  for (const ModelConfig& m : {small_model(), tied_model(), hybrid_model()}) {
    const ModelConfig back = parse_hf_config(hf_config_json(m, DType::kF32), "config.json");
    const auto diffs = diff_model(back, m);
    EXPECT_TRUE(diffs.empty()) << diffs.front();
  }
}

// meta-llama/Llama-2-7b-hf's config.json as published: rope_theta and others absent.
TEST(HfConfigTest, ReadsAPublishedLlamaConfig) {
  const std::string text = R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
    "tie_word_embeddings": false, "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000})";
  const ModelConfig m = parse_hf_config(text, "llama2/config.json");
  EXPECT_EQ(m.dim, 4096);
  EXPECT_EQ(m.ffn_dim, 11008);
  EXPECT_EQ(m.n_layers, 32);
  EXPECT_EQ(m.n_heads, 32);
  EXPECT_EQ(m.n_kv_heads, 32);
  EXPECT_EQ(m.vocab_size, 32000);
  EXPECT_EQ(m.max_seq_len, 4096);
  EXPECT_EQ(m.rope_theta, 10000.0);
  EXPECT_EQ(m.norm_eps, 1e-5);
  EXPECT_FALSE(m.tie_embeddings);
  EXPECT_EQ(m.layer_pattern, std::vector<AttentionKind>{AttentionKind::kSoftmax});
}

TEST(HfConfigTest, RefusesWhatMementoCannotComputeNamingTheKey) {
  json base = json::parse(hf_config_json(small_model(), DType::kF32));
  auto error_with = [&](const std::string& key, const json& value) {
    json j = base;
    if (value.is_discarded()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
    return checkpoint_error([&] { parse_hf_config(j.dump(), "x/config.json"); });
  };
  const json erase = json(json::value_t::discarded);
  EXPECT_NE(error_with("rope_scaling", json{{"rope_type", "llama3"}, {"factor", 8.0}})
                .find("x/config.json: 'rope_scaling' is {"),
            std::string::npos);
  EXPECT_NE(error_with("attention_bias", true).find("'attention_bias' is true"), std::string::npos);
  EXPECT_NE(error_with("mlp_bias", true).find("'mlp_bias'"), std::string::npos);
  EXPECT_NE(error_with("hidden_act", "gelu").find("'hidden_act' is not silu"), std::string::npos);
  EXPECT_NE(
      error_with("head_dim", 32).find("'head_dim' is not hidden_size / num_attention_heads = 16"),
      std::string::npos);
  EXPECT_NE(error_with("model_type", "mistral").find("'model_type' is 'mistral'"),
            std::string::npos);
  EXPECT_NE(error_with("hidden_size", erase).find("x/config.json: no 'hidden_size'"),
            std::string::npos);
  EXPECT_NE(error_with("hidden_size", "64").find("'hidden_size' has the wrong type"),
            std::string::npos);
  EXPECT_NE(error_with("model_type", "memento_llama").find("'memento_layer_pattern' is missing"),
            std::string::npos);
  EXPECT_NE(error_with("num_key_value_heads", 3).find("describes no valid model"),
            std::string::npos);
  EXPECT_NE(checkpoint_error([&] { parse_hf_config("{", "x/config.json"); }).find("not valid JSON"),
            std::string::npos);
  json rope_default = base;
  rope_default["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_NO_THROW(parse_hf_config(rope_default.dump(), "x/config.json"));
}

struct ExportCase {
  const char* name;
  ModelConfig config;
  int world;
};

TEST(HfWeightsTest, ExportOfATrainerCheckpointLoadsBackBitForBit) {
  const std::vector<ExportCase> cases = {{"untied", small_model(), 1},
                                         {"tied", tied_model(), 1},
                                         {"hybrid", hybrid_model(), 1},
                                         {"untied_2ranks", small_model(), 2},
                                         {"hybrid_2ranks", hybrid_model(), 2}};
  for (const ExportCase& c : cases) {
    SCOPED_TRACE(c.name);
    ScratchDir dir;
    const auto saved = random_model(c.config, 11);
    save_trainer_checkpoint(*saved, dir / "ckpt", c.world);
    const auto files = export_hf(dir / "ckpt", dir / "hf");  // the root: its latest checkpoint
    EXPECT_EQ(files,
              (std::vector<std::string>{dir / "hf/config.json", dir / "hf/model.safetensors"}));

    const checkpoint::SafetensorsReader reader(dir / "hf/model.safetensors");
    EXPECT_EQ(reader.metadata().at("format"), "pt");
    EXPECT_EQ(reader.tensors().size(), saved->params().entries().size());
    EXPECT_EQ(reader.find("lm_head.weight") != nullptr, !c.config.tie_embeddings);
    EXPECT_EQ(reader.find("model.layers.0.self_attn.o_norm.weight") != nullptr,
              c.config.layer_kind(0) == AttentionKind::kLinear);
    EXPECT_EQ(reader.find("model.layers.1.self_attn.k_proj.weight")->shape, (Shape{32, 64}));

    LlamaModel fresh(c.config);
    fresh.params().allocate(c.config.dtype);
    fresh.params().initialize(99);
    load_hf_weights(dir / "hf", c.config, fresh.params());
    expect_identical_params(fresh.params(), saved->params());
  }
}

TEST(HfWeightsTest, ShardedExportLoadsBackBitForBit) {
  ScratchDir dir;
  const ModelConfig config = hybrid_model();
  const auto saved = random_model(config, 5);
  save_trainer_checkpoint(*saved, dir / "ckpt", 1);
  const std::string step_dir = *checkpoint::find_latest(dir / "ckpt");
  const auto files = export_hf(step_dir, dir / "hf", {DType::kF32, 40'000});
  ASSERT_GT(files.size(), 3u);
  EXPECT_EQ(files.back(), dir / "hf/model.safetensors.index.json");
  EXPECT_FALSE(fs::exists(dir / "hf/model.safetensors"));
  const json index = json::parse(read_text(files.back()));
  EXPECT_EQ(index["weight_map"].size(), saved->params().entries().size());
  for (size_t i = 1; i + 1 < files.size(); ++i) {  // a shard holds one tensor or fits the limit
    const checkpoint::SafetensorsReader shard(files[i]);
    uint64_t bytes = 0;
    for (const auto& t : shard.tensors()) bytes += t.bytes();
    EXPECT_TRUE(shard.tensors().size() == 1 || bytes <= 40'000u) << files[i];
  }

  LlamaModel fresh(config);
  fresh.params().allocate(config.dtype);
  load_hf_weights(dir / "hf", config, fresh.params());
  expect_identical_params(fresh.params(), saved->params());
}

TEST(HfWeightsTest, Bf16ExportRoundsOnceAndRefreshesTheComputeCopy) {
  ScratchDir dir;
  const ModelConfig config = tied_model();
  const auto saved = random_model(config, 3);
  save_trainer_checkpoint(*saved, dir / "ckpt", 1);
  export_hf(dir / "ckpt", dir / "hf", {DType::kBF16, 5'000'000'000});
  EXPECT_EQ(json::parse(read_text(dir / "hf/config.json"))["torch_dtype"], "bfloat16");
  EXPECT_EQ(checkpoint::SafetensorsReader(dir / "hf/model.safetensors").tensors()[0].dtype,
            DType::kBF16);

  LlamaModel fresh(config);  // fp32 masters with a bf16 compute copy, as a GPU run keeps them
  fresh.params().allocate(DType::kF32, Device::cpu(), nullptr, DType::kBF16);
  load_hf_weights(dir / "hf", config, fresh.params());
  for (size_t i = 0; i < fresh.params().entries().size(); ++i) {
    const ParamRef ref{static_cast<int>(i)};
    const float* want = saved->params().value(ref).data<float>();
    const float* got = fresh.params().value(ref).data<float>();
    const auto* compute = static_cast<const uint16_t*>(fresh.params().compute(ref).raw());
    for (int64_t k = 0; k < fresh.params().value(ref).numel(); ++k) {
      ASSERT_EQ(got[k], bf16_to_float(float_to_bf16(want[k]))) << fresh.params().entries()[i].name;
      ASSERT_EQ(compute[k], float_to_bf16(want[k])) << fresh.params().entries()[i].name;
    }
  }
}

TEST(HfWeightsTest, RefusesAConfigOfAnotherModelNamingEveryKey) {
  ScratchDir dir;
  const auto saved = random_model(small_model(), 1);
  save_trainer_checkpoint(*saved, dir / "ckpt", 1);
  export_hf(dir / "ckpt", dir / "hf");
  ModelConfig other = small_model();
  other.ffn_dim = 128;
  other.tie_embeddings = true;
  other.layer_pattern = {AttentionKind::kSoftmax, AttentionKind::kLinear};
  other.rope_theta = 10000.0;
  other.norm_eps = 1e-5;
  LlamaModel model(other);
  model.params().allocate(DType::kF32);
  const std::string error =
      checkpoint_error([&] { load_hf_weights(dir / "hf", other, model.params()); });
  for (const std::string& part :
       std::vector<std::string>{dir / "hf/config.json: describes another model",
                                "intermediate_size = 160 but model.ffn_dim = 128",
                                "tie_word_embeddings = false but model.tie_embeddings = true",
                                "rope_theta = 500000 but model.rope_theta = 10000",
                                "rms_norm_eps = 0.000001 but model.norm_eps = 0.00001",
                                "memento_layer_pattern = [softmax] (a transformers Llama) but "
                                "model.layer_pattern = [softmax, linear]"})
    EXPECT_NE(error.find(part), std::string::npos) << part << " in: " << error;
  EXPECT_NE(checkpoint_error([&] {
              load_hf_weights(dir / "nowhere", other, model.params());
            }).find("nowhere/config.json: cannot open"),
            std::string::npos);
}

// A directory written by hand with write_safetensors: a tensor missing, one unexpected, one of
// the wrong shape. All are listed, with the file, and no parameter is written.
TEST(HfWeightsTest, ListsMissingUnexpectedAndMisshapenTensorsBeforeWritingAny) {
  ScratchDir dir;
  const ModelConfig config = small_model();
  const auto source = random_model(config, 2);
  std::vector<Tensor> keep;
  std::vector<checkpoint::SafetensorsEntry> entries;
  for (size_t i = 0; i < source->params().entries().size(); ++i) {
    const auto& e = source->params().entries()[i];
    TensorView v = source->params().value(ParamRef{static_cast<int>(i)});
    if (e.name == "model.norm.weight") continue;
    if (e.name == "model.embed_tokens.weight") v = v.slice(0, 255);
    entries.push_back({e.name, v, DType::kF32});
  }
  keep.push_back(Tensor::zeros({3}, DType::kF32));
  entries.push_back({"model.extra.weight", keep.back(), DType::kF32});
  entries.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", keep.back(), DType::kF32});
  fs::create_directories(dir / "hf");
  std::ofstream(dir / "hf/config.json") << hf_config_json(config, DType::kF32);
  checkpoint::write_safetensors(dir / "hf/model.safetensors", entries, {{"format", "pt"}});

  const auto target = random_model(config, 8);
  const std::string error =
      checkpoint_error([&] { load_hf_weights(dir / "hf", config, target->params()); });
  const std::string file = dir / "hf/model.safetensors";
  for (const std::string& part : std::vector<std::string>{
           "the weights do not fit the model", "1 missing: model.norm.weight",
           "1 unexpected: model.extra.weight (" + file + ")",
           "1 with the wrong shape or dtype: model.embed_tokens.weight in " + file +
               ": expected [256, 64] of a float dtype, found [255, 64] F32"})
    EXPECT_NE(error.find(part), std::string::npos) << part << " in: " << error;
  EXPECT_EQ(error.find("inv_freq"), std::string::npos) << "rotary buffers are not parameters";
  const auto untouched = random_model(config, 8);
  expect_identical_params(target->params(), untouched->params());
}

TEST(HfWeightsTest, ATiedHeadStoredAnywayMustEqualTheEmbedding) {
  ScratchDir dir;
  const ModelConfig config = tied_model();
  const auto source = random_model(config, 4);
  const ParameterSet& p = source->params();
  const TensorView embed = p.value(ParamRef{0});
  ASSERT_EQ(p.entries()[0].name, "model.embed_tokens.weight");
  fs::create_directories(dir / "hf");
  std::ofstream(dir / "hf/config.json") << hf_config_json(config, DType::kF32);
  auto write_with_head = [&](const TensorView& head) {
    std::vector<checkpoint::SafetensorsEntry> entries;
    for (size_t i = 0; i < p.entries().size(); ++i)
      entries.push_back({p.entries()[i].name, p.value(ParamRef{static_cast<int>(i)}), DType::kF32});
    entries.push_back({"lm_head.weight", head, DType::kF32});
    checkpoint::write_safetensors(dir / "hf/model.safetensors", entries);
  };
  LlamaModel fresh(config);
  fresh.params().allocate(DType::kF32);
  write_with_head(embed);
  load_hf_weights(dir / "hf", config, fresh.params());
  expect_identical_params(fresh.params(), p);

  Tensor other = Tensor::empty(embed.shape(), DType::kF32);
  copy(embed, other);
  other.data<float>()[5] += 1.0f;
  write_with_head(other);
  EXPECT_NE(checkpoint_error([&] {
              load_hf_weights(dir / "hf", config, fresh.params());
            }).find("tensor 'lm_head.weight' differs from model.embed_tokens.weight"),
            std::string::npos);
}

TEST(HfWeightsTest, ParsesSizesAsTransformers) {
  EXPECT_EQ(parse_byte_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("2GiB"), 2u << 30);
  EXPECT_EQ(parse_byte_size("1.5KB"), 1500u);
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_THROW(parse_byte_size("5 gigs"), ConfigError);
  EXPECT_THROW(parse_byte_size("0"), ConfigError);
  EXPECT_THROW(parse_byte_size("-1GB"), ConfigError);
}

// The binaries as a user runs them: train two steps, export with shards, load the export.
TEST(HfWeightsE2ETest, TrainerDataExportsATrainerCheckpoint) {
  const std::string dir = testing::scratch_dir("hf_export_e2e");
  testing::write_fortunes_corpus(dir);
  std::ofstream(dir + "/config.yaml")
      << "run: {out_dir: " << dir << "/run}\n"
      << "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 64, "
         "max_seq_len: 32, tie_embeddings: true, layer_pattern: [softmax, linear]}\n"
      << "data: {train: " << dir << "/train.bin, val: " << dir << "/val.bin}\n"
      << "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: 2, eval_every: 0, "
         "threads: 1}\n"
      << "optim: {warmup_steps: 1}\n";
  const auto train =
      testing::run_command(testing::trainer_binary() + " --config " + dir + "/config.yaml 2>&1");
  ASSERT_EQ(train.exit_code, 0) << train.output;

  const std::string trainer_data = std::string(MEMENTO_BINARY_DIR) + "/bin/trainer-data";
  const auto exported =
      testing::run_command(trainer_data + " export-hf --checkpoint " + dir +
                           "/run/checkpoints --out " + dir + "/hf --max-shard-size=20KB 2>&1");
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_NE(exported.output.find("model.safetensors.index.json"), std::string::npos)
      << exported.output;
  EXPECT_NE(exported.output.find("not a transformers Llama"), std::string::npos) << exported.output;

  const std::string step_dir = *checkpoint::find_latest(dir + "/run/checkpoints");
  const ModelConfig config =
      parse_model_config(checkpoint::read_string(step_dir, "meta/config"), "meta/config");
  LlamaModel from_checkpoint(config);
  from_checkpoint.params().allocate(config.dtype);
  checkpoint::StateRegistry registry;
  for (size_t i = 0; i < from_checkpoint.params().entries().size(); ++i)
    registry.add_tensor("model/" + from_checkpoint.params().entries()[i].name,
                        from_checkpoint.params().value(ParamRef{static_cast<int>(i)}));
  checkpoint::load_checkpoint(registry, step_dir, 0, {.allow_unregistered = true});
  LlamaModel from_hf(config);
  from_hf.params().allocate(config.dtype);
  load_hf_weights(dir + "/hf", config, from_hf.params());
  expect_identical_params(from_hf.params(), from_checkpoint.params());

  // Bad input: one line, naming what was wrong, exit 1.
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--checkpoint " + dir + "/nowhere --out " + dir + "/x", dir + "/nowhere: neither"},
           {"--checkpoint " + dir + "/run/checkpoints", "needs --out"},
           {"--checkpoint a --out b --dtype f16", "--dtype: expected f32 or bf16"},
           {"--checkpoint a --out b --max-shard-size 5XB", "'5XB' is not a size"},
           {"--out b --checkpoint a --shards 2", "unknown argument '--shards'"}}) {
    const auto r = testing::run_command(trainer_data + " export-hf " + args + " 2>&1");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.rfind("trainer-data: error: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in: " << r.output;
  }
}

}  // namespace
}  // namespace memento

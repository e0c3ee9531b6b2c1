// The run configuration: a YAML file (configs/*.yaml) plus `--set key.path=value` overrides,
// typed into one struct per component. Every error is a ConfigError naming the source, the YAML
// line where known, and the full key path, e.g.
//   configs/tiny.yaml:12: unknown key 'train.micro_batchs' (did you mean 'train.micro_batch'?)
// Relative paths (data.*, run.out_dir, checkpoint.dir) are relative to the current directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/model_config.h"

namespace memento {

struct RunConfig {
  std::string name = "run";
  std::string out_dir = "runs/run";  // logs, metrics.jsonl and (by default) checkpoints
  uint64_t seed = 1234;              // parameters, data order and dropout-free sampling
  void validate() const;
  bool operator==(const RunConfig&) const = default;
};

// Token file formats of core/data/token_dataset.h; auto: megatron when a .idx exists, else llmc.
inline const std::vector<std::string> kDataFormats = {"auto", "llmc", "megatron"};

struct DataConfig {
  std::string train;                   // token file(s), a glob of llm.c shards or a Megatron prefix
  std::string val;                     // empty: the last val_fraction of train is held out
  std::string format = "auto";         // one of kDataFormats
  double val_fraction = 0.05;          // used only when val is empty; in [0, 1)
  std::string tokenizer;               // BPE file, stored in checkpoints for sampling
  void validate() const;               // does not require train (a dry run needs no data)
  void validate_for_training() const;  // validate() and train is set
  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  int64_t seq_len = 256;     // T; at most model.max_seq_len
  int64_t micro_batch = 4;   // B: sequences per forward/backward on one DP rank
  int64_t global_batch = 8;  // sequences per optimizer step over all DP ranks
  int64_t steps = 100;       // optimizer steps
  int64_t eval_every = 50;   // steps between evaluations; 0 = never
  int64_t eval_batches = 8;  // micro-batches per evaluation
  int64_t log_every = 1;     // steps between metric lines
  int64_t threads = 0;       // CPU threads; 0 = all cores
  double peak_tflops = 0;    // for MFU; 0 = measure
  // Micro-batches per optimizer step on each of dp ranks: global_batch / (micro_batch × dp).
  int64_t grad_accum(int64_t dp) const { return global_batch / (micro_batch * dp); }
  void validate() const;
  bool operator==(const TrainConfig&) const = default;
};

inline const std::vector<std::string> kLrSchedules = {"cosine", "linear", "constant"};

struct OptimConfig {
  std::string name = "adamw";       // one of optim::optimizer_names()
  double lr = 3e-4;                 // peak learning rate, reached after warmup_steps
  double min_lr = 3e-5;             // end of the decay
  int64_t warmup_steps = 10;        // linear warmup from 0
  std::string schedule = "cosine";  // one of kLrSchedules: decay from lr to min_lr after warmup
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled (AdamW); not applied to norms
  double grad_clip = 1.0;     // max global gradient norm; 0 = off
  void validate() const;
  bool operator==(const OptimConfig&) const = default;
};

struct CheckpointConfig {
  std::string dir;     // resolved by parse_config to <run.out_dir>/checkpoints when empty
  int64_t every = 0;   // steps between checkpoints; 0 = only at the end
  int64_t keep = 2;    // most recent checkpoints kept on disk; at least 1
  bool at_end = true;  // save when training ends (a stop by SIGTERM always saves)
  // A Hugging Face model directory (config.json + model.safetensors) whose weights a run that
  // starts at step 0 begins from; a resumed run ignores it. Empty: initialise from run.seed.
  std::string init_from_hf;
  void validate() const;
  bool operator==(const CheckpointConfig&) const = default;
};

struct MemoryConfig {
  std::string activation_policy = "keep";  // one of activation_policies()
  int64_t budget_bytes = 0;                // 0 = unlimited; else the CPU allocations are capped
  void validate() const;
  bool operator==(const MemoryConfig&) const = default;
};

struct ParallelConfig {
  int64_t dp = 1;      // data parallel ranks; the launcher checks dp × tp × pp × cp = world size
  int64_t tp = 1;      // tensor parallel (not available yet: must be 1)
  int64_t pp = 1;      // pipeline parallel (not available yet: must be 1)
  int64_t cp = 1;      // context parallel (not available yet: must be 1)
  bool zero1 = false;  // shard optimizer states over the data-parallel ranks (ZeRO-1)
  double bucket_mb = 25;  // gradient all-reduce bucket size, MiB of gradients
  // A GPU collective not finished this long after it was issued aborts the job (NCCL watchdog);
  // 0: no deadline.
  double nccl_timeout_s = 600;
  int64_t world_size() const { return dp * tp * pp * cp; }
  void validate() const;
  bool operator==(const ParallelConfig&) const = default;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  CheckpointConfig checkpoint;
  MemoryConfig memory;
  ParallelConfig parallel;
  // Every section's validate() and the checks across sections. Messages start with "config: "
  // and the key path; parse_config replaces "config" by the source file and line.
  void validate() const;
  bool operator==(const Config& other) const;  // every key equal (model via diff_model)
};

// Reads the YAML file at path, applies the overrides ("key.path=value", value parsed as YAML)
// to the tree, types it, resolves defaults and validates. Throws ConfigError.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same on YAML text; source_name names it in error messages.
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    const std::string& source_name = "config");

// The fully resolved config as YAML, every key present; parse_config(to_yaml(c)) == c.
std::string to_yaml(const Config& config);
// Just the `model:` section, as in to_yaml.
std::string model_to_yaml(const ModelConfig& model);
// Reads the `model:` section of a YAML document (model_to_yaml or to_yaml output, e.g. from a
// checkpoint); other sections are ignored. Validates the model. Throws ConfigError.
ModelConfig parse_model_config(const std::string& yaml_text, const std::string& source_name);
// The model keys that differ, one "model.dim: 256 vs 512" entry each; empty when equal.
std::vector<std::string> diff_model(const ModelConfig& a, const ModelConfig& b);

}  // namespace memento

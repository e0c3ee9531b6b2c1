// `trainer-data export-hf`: a trainer checkpoint written out as a Hugging Face model directory.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "checkpoint/safetensors.h"
#include "core/log.h"
#include "core/model/llama.h"
#include "launch/config.h"
#include "launch/hf_weights.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using memento::detail::concat;

std::string resolve_checkpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / checkpoint::rank_file_name(0))) return path;
  const auto latest = checkpoint::find_latest(path);
  MEMENTO_EXPECT(latest.has_value(), CheckpointError, path,
                 ": neither a checkpoint directory (with rank_00000.h5) nor a checkpoint root ",
                 "with a complete checkpoint");
  return *latest;
}

std::string format_bytes(uint64_t bytes) {  // decimal units, as --max-shard-size's
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1000 && unit + 1 < std::size(units)) {
    value /= 1000;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

}  // namespace

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
  // transformers' units: decimal KB/MB/GB/TB, binary KiB/MiB/GiB/TiB.
  static const std::regex kSize(
      R"(\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*)");
  std::smatch m;
  MEMENTO_EXPECT(std::regex_match(text, m, kSize), ConfigError, what, ": '", text,
                 "' is not a size (e.g. 5GB, 500MB, 2GiB, or bytes)");
  const std::string unit = m[2].matched ? m[2].str() : "B";
  const std::vector<std::pair<std::string, double>> kUnits = {
      {"B", 1},           {"KB", 1e3},           {"MB", 1e6},
      {"GB", 1e9},        {"TB", 1e12},          {"KiB", 1024.0},
      {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  double scale = 1;
  for (const auto& [name, factor] : kUnits)
    if (name == unit) scale = factor;
  const double bytes = std::stod(m[1].str()) * scale;
  MEMENTO_EXPECT(bytes >= 1 && bytes < 1.8e19, ConfigError, what, ": '", text,
                 "' is not a positive size");
  return static_cast<uint64_t>(std::floor(bytes));
}

std::vector<std::string> export_hf(const std::string& checkpoint_path, const std::string& out_dir,
                                   const HfExportOptions& options) {
  MEMENTO_EXPECT(options.dtype == DType::kF32 || options.dtype == DType::kBF16, ConfigError,
                 "--dtype: expected f32 or bf16, got ", dtype_name(options.dtype));
  const std::string dir = resolve_checkpoint(checkpoint_path);
  ModelConfig model =
      parse_model_config(checkpoint::read_string(dir, "meta/config"), dir + "/meta/config");
  // The checkpoint holds the master weights (fp32 for a bf16 run), read on the host.
  model.device = "cpu";
  model.dtype = model.master_dtype();
  const LlamaModel llama(model);  // declares the parameters' names and shapes; allocates nothing
  const auto& entries = llama.params().entries();
  std::vector<checkpoint::SafetensorsSpec> specs;
  for (const auto& e : entries) specs.push_back({e.name, e.shape, options.dtype});
  if (std::find(model.layer_pattern.begin(), model.layer_pattern.end(), AttentionKind::kLinear) !=
      model.layer_pattern.end())
    MEMENTO_LOG_WARN("export-hf: the model has linear-attention layers, so it is not a ",
                     "transformers Llama: config.json gets model_type memento_llama with ",
                     "memento_layer_pattern and memento_linear_attention (docs/hf-weights.md)");

  std::error_code error;
  fs::create_directories(out_dir, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create ", out_dir, ": ", error.message());
  std::vector<std::string> files = {checkpoint::join_path(out_dir, kHfConfigFile)};
  checkpoint::write_file_atomic(files[0], hf_config_json(model, options.dtype));

  // One shard's parameters at a time, in the master dtype; the writer converts in bounded chunks.
  Tensor shard;
  uint64_t peak_bytes = 0;
  const auto load = [&](const std::vector<size_t>& indices) {
    int64_t numel = 0;
    for (size_t i : indices) numel += entries[i].shape.numel();
    shard = Tensor();  // the previous shard is written: free it first
    shard = Tensor::empty(Shape{numel}, model.dtype);
    peak_bytes = std::max<uint64_t>(peak_bytes, shard.bytes());
    checkpoint::StateRegistry registry;
    std::vector<checkpoint::SafetensorsEntry> shard_entries;
    int64_t at = 0;
    for (size_t i : indices) {
      const TensorView view = shard.view().flat_range(at, entries[i].shape);
      registry.add_tensor("model/" + entries[i].name, view);
      shard_entries.push_back({entries[i].name, view, options.dtype});
      at += entries[i].shape.numel();
    }
    checkpoint::load_checkpoint(registry, dir, 0,
                                checkpoint::LoadOptions{.allow_unregistered = true});
    return shard_entries;
  };
  const auto weights =
      checkpoint::write_safetensors_model(out_dir, specs, options.max_shard_bytes, load);
  files.insert(files.end(), weights.begin(), weights.end());
  uint64_t total = 0;
  for (const auto& s : specs) total += s.bytes();
  MEMENTO_LOG_INFO("export-hf: step ", checkpoint::read_checkpoint_info(dir).step, " of ", dir,
                   " -> ", out_dir, ": ", specs.size(), " tensors, ", format_bytes(total), " in ",
                   dtype_name(options.dtype), ", ", weights.size() > 1 ? weights.size() - 1 : 1,
                   " safetensors file", weights.size() > 1 ? "s" : "", " (host buffer ",
                   format_bytes(peak_bytes), ")");
  return files;
}

int run_export_hf(const std::vector<std::string>& args) {
  std::string checkpoint_path, out_dir;
  HfExportOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string key = args[i], value;
    bool inline_value = false;
    if (const size_t eq = key.find('='); key.starts_with("--") && eq != std::string::npos) {
      value = key.substr(eq + 1);
      key.resize(eq);
      inline_value = true;
    }
    const auto take = [&] {
      if (inline_value) return value;
      MEMENTO_EXPECT(i + 1 < args.size(), ConfigError, "export-hf: ", key, " needs a value");
      return args[++i];
    };
    if (key == "--checkpoint") {
      checkpoint_path = take();
    } else if (key == "--out") {
      out_dir = take();
    } else if (key == "--dtype") {
      const std::string name = take();
      MEMENTO_EXPECT(name == "f32" || name == "bf16", ConfigError,
                     "export-hf: --dtype: expected f32 or bf16, got '", name, "'");
      options.dtype = dtype_from_name(name);
    } else if (key == "--max-shard-size") {
      options.max_shard_bytes = parse_byte_size(take(), "export-hf: --max-shard-size");
    } else {
      throw ConfigError(concat("export-hf: unknown argument '", args[i],
                               "' (expected --checkpoint, --out, --dtype, --max-shard-size)"));
    }
  }
  MEMENTO_EXPECT(!checkpoint_path.empty(), ConfigError,
                 "export-hf needs --checkpoint DIR (see --help)");
  MEMENTO_EXPECT(!out_dir.empty(), ConfigError, "export-hf needs --out DIR (see --help)");
  for (const auto& file : export_hf(checkpoint_path, out_dir, options))
    std::printf("%s\n", file.c_str());
  return 0;
}

}  // namespace memento

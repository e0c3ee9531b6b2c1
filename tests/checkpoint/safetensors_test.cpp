// safetensors files: round trips of every dtype, the bytes on disk checked by hand, sharded model
// directories with their index, and each kind of corrupt file refused with its own error.
#include "checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_test_util.h"

namespace memento::checkpoint {
namespace {

namespace fs = std::filesystem;
using test_util::fill_random_bytes;
using test_util::ScratchDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file as the format defines it, assembled by hand: length, header text, data.
std::string handmade_file(const std::string& header, const std::string& data) {
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return file + header + data;
}

// The CheckpointError message of opening `path`, or "" (and a failure) when it opens.
std::string open_error(const std::string& path) {
  try {
    SafetensorsReader reader(path);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << path << " opened";
  return "";
}

struct Owned {
  std::string name;
  Tensor tensor;
};

std::vector<Owned> random_tensors() {
  std::vector<Owned> out = {
      {"f32", Tensor::empty({3, 5}, DType::kF32)},
      {"f64", Tensor::empty({4}, DType::kF64)},
      {"bf16", Tensor::empty({2, 3, 4}, DType::kBF16)},
      {"f16", Tensor::empty({7}, DType::kF16)},
      {"i32", Tensor::empty({2, 2}, DType::kI32)},
      {"scalar", Tensor::empty({}, DType::kF32)},
      {"empty", Tensor::empty({0, 3}, DType::kF32)},
      {"model.layers.0.mlp.up_proj.weight", Tensor::empty({6, 2}, DType::kBF16)}};
  for (size_t i = 0; i < out.size(); ++i)
    fill_random_bytes(out[i].tensor.view().raw(), out[i].tensor.bytes(), 100 + i);
  return out;
}

std::vector<SafetensorsEntry> entries_of(const std::vector<Owned>& tensors) {
  std::vector<SafetensorsEntry> entries;
  for (const auto& t : tensors) entries.push_back({t.name, t.tensor, t.tensor.dtype()});
  return entries;
}

void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  if (a.bytes() > 0) {
    EXPECT_EQ(std::memcmp(a.view().raw(), b.view().raw(), a.bytes()), 0) << what;
  }
}

TEST(SafetensorsTest, RoundTripsEveryDtypeBitForBit) {
  ScratchDir dir;
  const auto tensors = random_tensors();
  write_safetensors(dir / "t.safetensors", entries_of(tensors), {{"format", "pt"}, {"k", "v"}});
  const SafetensorsReader reader(dir / "t.safetensors");
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"k", "v"}}));
  ASSERT_EQ(reader.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    ASSERT_NE(reader.find(t.name), nullptr) << t.name;
    expect_same_bytes(reader.read(t.name), t.tensor, t.name);
  }
  EXPECT_EQ(reader.data_start() % 8, 0u);
  for (const auto& info : reader.tensors())  // larger elements first: all naturally aligned
    EXPECT_EQ((reader.data_start() + info.begin) % dtype_size(info.dtype), 0u) << info.name;
  for (const auto& entry : fs::directory_iterator(dir.str()))  // no temporary file left
    EXPECT_EQ(entry.path().filename(), "t.safetensors");
}

// The bytes on disk against the format's definition, without the reader.
TEST(SafetensorsTest, BytesOnDiskMatchTheFormatByHand) {
  ScratchDir dir;
  Tensor a = Tensor::empty({2}, DType::kF32);
  a.data<float>()[0] = 1.0f;   // 00 00 80 3F little-endian
  a.data<float>()[1] = -2.0f;  // 00 00 00 C0
  Tensor b = Tensor::empty({3}, DType::kBF16);
  const uint16_t b_bits[3] = {0x3F80, 0x1234, 0xFFFF};
  std::memcpy(b.view().raw(), b_bits, sizeof(b_bits));
  // Given bf16 first: the writer still puts the 4-byte dtype first.
  write_safetensors(dir / "x.safetensors", {{"b", b, DType::kBF16}, {"a", a, DType::kF32}});
  const std::string file = read_bytes(dir / "x.safetensors");
  ASSERT_GE(file.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(file[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  ASSERT_EQ(file.size(), 8 + n + 8 + 6);
  const std::string header = file.substr(8, n);
  EXPECT_EQ(header[0], '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));  // padded with spaces
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json::array({2}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({0, 8}));
  EXPECT_EQ(j["b"]["dtype"], "BF16");
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({8, 14}));
  EXPECT_FALSE(j.contains("__metadata__"));
  const std::string expected_data("\x00\x00\x80\x3F\x00\x00\x00\xC0\x80\x3F\x34\x12\xFF\xFF", 14);
  EXPECT_EQ(file.substr(8 + n), expected_data);
}

TEST(SafetensorsTest, ReadsAHandMadeFileAndConverts) {
  ScratchDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
      R"("ids":{"shape":[1],"dtype":"I32","data_offsets":[0,4]}})";
  write_bytes(dir / "h.safetensors",
              handmade_file(header, std::string("\xFF\xFF\xFF\xFF\xC0\x3F\x80\xBF", 8)));
  const SafetensorsReader reader(dir / "h.safetensors");
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  ASSERT_EQ(reader.tensors().size(), 2u);
  EXPECT_EQ(reader.tensors()[0].name, "ids");  // in data order
  EXPECT_EQ(reader.read("ids").data<int32_t>()[0], -1);
  Tensor w = Tensor::empty({2}, DType::kF32);
  reader.read("w", w);  // bf16 0x3FC0 = 1.5, 0xBF80 = -1
  EXPECT_EQ(w.data<float>()[0], 1.5f);
  EXPECT_EQ(w.data<float>()[1], -1.0f);
  Tensor wrong = Tensor::empty({3}, DType::kF32);
  EXPECT_NE(
      test_util::error_of([&] { reader.read("w", wrong); }).find("read into a tensor of shape [3]"),
      std::string::npos);
}

TEST(SafetensorsTest, ConvertsOnWrite) {
  ScratchDir dir;
  Tensor a = Tensor::empty({5}, DType::kF32);
  const float values[5] = {1.0f, 1.00390625f, 3.14159f, -0.0f, 65504.0f};
  std::memcpy(a.view().raw(), values, sizeof(values));
  write_safetensors(dir / "c.safetensors", {{"a", a, DType::kBF16}});
  const Tensor stored = SafetensorsReader(dir / "c.safetensors").read("a");
  ASSERT_EQ(stored.dtype(), DType::kBF16);
  const auto* bits = static_cast<const uint16_t*>(stored.view().raw());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(bits[i], float_to_bf16(values[i])) << i;
}

// Each corruption, with the words of its own error, the byte offset and the tensor.
TEST(SafetensorsTest, RefusesCorruptFilesEachWithItsError) {
  ScratchDir dir;
  const auto tensors = random_tensors();
  write_safetensors(dir / "good.safetensors", entries_of(tensors));
  const std::string good = read_bytes(dir / "good.safetensors");
  const SafetensorsReader reader(dir / "good.safetensors");
  const SafetensorsTensorInfo last = reader.tensors().back();

  auto error_for = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir / name, bytes);
    return open_error(dir / name);
  };
  auto expect_has = [](const std::string& message, const std::vector<std::string>& parts) {
    for (const auto& p : parts)
      EXPECT_NE(message.find(p), std::string::npos) << p << " in: " << message;
  };

  expect_has(error_for("tiny", good.substr(0, 5)),
             {dir / "tiny", "byte offset 0", "shorter than the 8-byte header length"});
  std::string long_header = good;
  long_header[5] = '\x01';  // header length + 2^40
  expect_has(error_for("long_header", long_header),
             {"byte offset 0", "header length ", "runs past the end of the file"});
  // Truncated in the data: the last tensor's bytes run past the end.
  expect_has(error_for("truncated", good.substr(0, good.size() - 3)),
             {"tensor '" + last.name + "'",
              "byte offset " + std::to_string(reader.data_start() + last.begin),
              "run past the end of the file"});
  expect_has(error_for("trailing", good + "xyz"), {"3 bytes after the last tensor"});

  const std::string data(16, '\0');
  expect_has(error_for("overlap",
                       handmade_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                     data.substr(0, 12))),
             {"tensor 'b'", "overlap tensor 'a'"});
  expect_has(error_for("out_of_range",
                       handmade_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                     data.substr(0, 12))),
             {"tensor 'a'", "run past the end of the file", "holds 12 bytes"});
  expect_has(
      error_for("gap", handmade_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                                     data)),
      {"tensor 'b'", "a gap of 4 bytes"});
  expect_has(error_for("shape_dtype",
                       handmade_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                     data.substr(0, 8))),
             {"tensor 'a'", "F32 and shape [3] need 12 bytes", "hold 8"});
  expect_has(error_for("bf16_shape",
                       handmade_file(R"({"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}})",
                                     data.substr(0, 4))),
             {"tensor 'a'", "BF16 and shape [2, 2] need 8 bytes"});
  expect_has(error_for("bad_dtype",
                       handmade_file(R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                                     data.substr(0, 2))),
             {"tensor 'a'", "unsupported dtype 'BOOL'"});
  expect_has(error_for("negative",
                       handmade_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                                     data.substr(0, 8))),
             {"tensor 'a'", "non-size"});
  expect_has(
      error_for("dims", handmade_file(
                            R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1],"data_offsets":[0,4]}})",
                            data.substr(0, 4))),
      {"tensor 'a'", "at most 6 sizes"});
  expect_has(error_for("no_offsets", handmade_file(R"({"a":{"dtype":"F32","shape":[1]}})", "")),
             {"tensor 'a'", "no 'data_offsets'"});
  expect_has(error_for("json", handmade_file(R"({"a":{"dtype":"F32",)", "")),
             {"not valid JSON", "byte offset"});
  expect_has(
      error_for("twice", handmade_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                       data.substr(0, 8))),
      {"tensor 'a'", "named twice"});
  expect_has(error_for("not_object", handmade_file("[1, 2]", "")), {"not a JSON object"});
}

TEST(SafetensorsTest, ShardsAsTransformersAndWritesTheIndexLast) {
  std::vector<SafetensorsSpec> specs;
  for (int64_t rows : {100, 100, 100, 100, 400, 100}) {  // 400, 400, 400, 400, 1600, 400 bytes
    std::string name = "t";
    name += std::to_string(specs.size());
    specs.push_back({name, Shape{rows}, DType::kF32});
  }
  const auto plan = plan_safetensors_shards(specs, 1000);
  EXPECT_EQ(plan, (std::vector<std::vector<size_t>>{{0, 1}, {4}, {2, 3}, {5}}));
  EXPECT_EQ(plan_safetensors_shards(specs, 1 << 20),
            (std::vector<std::vector<size_t>>{{0, 1, 2, 3, 4, 5}}));
  EXPECT_EQ(safetensors_shard_names(1), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(safetensors_shard_names(3)[1], "model-00002-of-00003.safetensors");

  ScratchDir dir;
  std::vector<Tensor> data;
  for (size_t i = 0; i < specs.size(); ++i) {
    data.push_back(Tensor::empty(specs[i].shape, DType::kF32));
    fill_random_bytes(data.back().view().raw(), data.back().bytes(), 7 + i);
  }
  std::vector<std::vector<size_t>> loaded;
  const auto load = [&](const std::vector<size_t>& indices) {
    loaded.push_back(indices);
    std::vector<SafetensorsEntry> entries;
    for (size_t i : indices) entries.push_back({specs[i].name, data[i], DType::kF32});
    return entries;
  };
  const std::string out = dir / "model";
  auto files = write_safetensors_model(out, specs, 1000, load);
  EXPECT_EQ(loaded, plan);  // one shard in memory at a time, in order
  ASSERT_EQ(files.size(), 5u);
  EXPECT_EQ(files.back(), out + "/model.safetensors.index.json");
  const auto index = nlohmann::json::parse(read_bytes(files.back()));
  EXPECT_EQ(index["metadata"]["total_size"], 400 * 5 + 1600);
  EXPECT_EQ(index["weight_map"]["t4"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t3"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(SafetensorsReader(out + "/model-00001-of-00004.safetensors").metadata().at("format"),
            "pt");

  auto expect_reads_back = [&] {
    const SafetensorsModel model = open_safetensors_model(out);
    ASSERT_EQ(model.tensors.size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto& [f, info] = model.tensors.at(specs[i].name);
      expect_same_bytes(model.files[f].read(info->name), data[i], specs[i].name);
    }
  };
  expect_reads_back();
  auto listing = [&] {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(out)) names.insert(e.path().filename().string());
    return names;
  };
  // A second export into the same directory as one file removes the shards and the index.
  write_bytes(out + "/tokenizer.json", "{}");
  files = write_safetensors_model(out, specs, 1 << 20, load);
  EXPECT_EQ(files, std::vector<std::string>{out + "/model.safetensors"});
  EXPECT_EQ(listing(), (std::set<std::string>{"model.safetensors", "tokenizer.json"}));
  expect_reads_back();
  // And back to shards: the single file goes.
  write_safetensors_model(out, specs, 2000, load);
  EXPECT_EQ(listing().count("model.safetensors"), 0u);
  EXPECT_EQ(listing().size(), 1u + 2u + 1u);  // tokenizer, 2 shards, index
  expect_reads_back();
}

TEST(SafetensorsTest, RefusesAnIndexThatDisagreesWithItsFiles) {
  ScratchDir dir;
  Tensor a = Tensor::zeros({4}, DType::kF32);
  const std::vector<SafetensorsSpec> specs = {
      {"a", Shape{4}, DType::kF32}, {"b", Shape{4}, DType::kF32}, {"c", Shape{4}, DType::kF32}};
  const auto load = [&](const std::vector<size_t>& indices) {
    std::vector<SafetensorsEntry> entries;
    for (size_t i : indices) entries.push_back({specs[i].name, a, DType::kF32});
    return entries;
  };
  const std::string out = dir / "m";
  write_safetensors_model(out, specs, 32, load);  // {a, b}, {c}
  const std::string index_path = out + "/model.safetensors.index.json";
  const std::string index = read_bytes(index_path);
  auto error_with_index = [&](const std::string& text) {
    write_bytes(index_path, text);
    return test_util::error_of([&] { open_safetensors_model(out); });
  };
  auto swapped = nlohmann::json::parse(index);
  swapped["weight_map"]["a"] = "model-00002-of-00002.safetensors";
  EXPECT_NE(error_with_index(swapped.dump()).find("tensor 'a' is listed in model-00002-of-00002"),
            std::string::npos);
  auto partial = nlohmann::json::parse(index);
  partial["weight_map"].erase("b");
  EXPECT_NE(error_with_index(partial.dump())
                .find("holds tensor 'b', which model.safetensors.index.json does not list"),
            std::string::npos);
  auto escaping = nlohmann::json::parse(index);
  escaping["weight_map"]["a"] = "../elsewhere.safetensors";
  EXPECT_NE(error_with_index(escaping.dump()).find("is not a file name in"), std::string::npos);
  EXPECT_NE(error_with_index("{\"weight_map\": 3}").find("no 'weight_map' object"),
            std::string::npos);
  write_bytes(index_path, index);
  write_bytes(out + "/model.safetensors", read_bytes(out + "/model-00001-of-00002.safetensors"));
  EXPECT_NE(test_util::error_of([&] { open_safetensors_model(out); }).find("remove the stale one"),
            std::string::npos);
  EXPECT_NE(test_util::error_of([&] {
              open_safetensors_model(dir / "none");
            }).find("no model.safetensors and no model.safetensors.index.json"),
            std::string::npos);
}

TEST(SafetensorsTest, AFailedWriteLeavesTheOldFileAndNoTemporary) {
  ScratchDir dir;
  Tensor a = Tensor::zeros({4}, DType::kF32);
  write_safetensors(dir / "w.safetensors", {{"a", a, DType::kF32}});
  const std::string before = read_bytes(dir / "w.safetensors");
  EXPECT_NE(
      test_util::error_of([&] {
        write_safetensors(dir / "w.safetensors", {{"a", a, DType::kF32}, {"a", a, DType::kF32}});
      }).find("given twice"),
      std::string::npos);
  EXPECT_EQ(read_bytes(dir / "w.safetensors"), before);
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.str())) ++files;
  EXPECT_EQ(files, 1u);
}

}  // namespace
}  // namespace memento::checkpoint

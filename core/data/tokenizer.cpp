#include "core/data/tokenizer.h"

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/data/bpe_tokenizer.h"
#include "core/data/hf_tokenizer.h"
#include "core/data/sentencepiece_tokenizer.h"
#include "core/error.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kBpeMagic = "memento-bpe";
constexpr std::string_view kSerializedTag = "memento-tokenizer ";
constexpr std::string_view kSentencePieceTag = "memento-tokenizer sentencepiece base64\n";

// Memento's .bpe behind the interface; <|endoftext|> is its end of sequence.
class MementoBpeTokenizer final : public Tokenizer {
 public:
  MementoBpeTokenizer(BpeTokenizer bpe, std::string source)
      : bpe_(std::move(bpe)), source_(std::move(source)) {}
  std::vector<int32_t> encode(std::string_view text) const override { return bpe_.encode(text); }
  std::string decode(const std::vector<int32_t>& ids) const override { return bpe_.decode(ids); }
  int64_t vocab_size() const override { return bpe_.vocab_size(); }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return bpe_.eot(); }
  std::string name() const override { return "memento-bpe"; }
  std::string describe() const override {
    return detail::concat("Memento byte-level BPE ", source_, ": vocab ", vocab_size(), ", ",
                          bpe_.num_merges(), " merges, eos <|endoftext|> (", bpe_.eot(), ")");
  }

 private:
  BpeTokenizer bpe_;
  std::string source_;
};

enum class Kind { kMementoBpe, kHuggingFace, kSentencePiece };

Kind kind_of(std::string_view bytes) {
  if (bytes.starts_with(kBpeMagic)) return Kind::kMementoBpe;
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && bytes[first] == '{') return Kind::kHuggingFace;
  return Kind::kSentencePiece;
}

std::unique_ptr<Tokenizer> from_bytes(std::string_view bytes, const std::string& source) {
  MEMENTO_EXPECT(!bytes.empty(), DataError, source, ": empty tokenizer file");
  switch (kind_of(bytes)) {
    case Kind::kMementoBpe:
      return std::make_unique<MementoBpeTokenizer>(BpeTokenizer::parse(bytes, source), source);
    case Kind::kHuggingFace:
      return HfBpeTokenizer::parse(bytes, source);
    case Kind::kSentencePiece:
      break;
  }
  return SentencePieceTokenizer::from_bytes(bytes, source);
}

// The file a tokenizer path names: itself, or a model directory's tokenizer.json or .model.
std::string resolve(const std::string& path) {
  MEMENTO_EXPECT(fs::exists(path), DataError, path, ": no such tokenizer file or directory");
  if (!fs::is_directory(path)) return path;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path file = fs::path(path) / name;
    if (fs::exists(file)) return file.string();
  }
  throw DataError(detail::concat(path, ": a directory without tokenizer.json or tokenizer.model"));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), DataError, path, ": cannot open tokenizer file");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::unique_ptr<Tokenizer> make_memento_bpe_tokenizer(BpeTokenizer bpe, std::string source) {
  return std::make_unique<MementoBpeTokenizer>(std::move(bpe), std::move(source));
}

std::optional<int32_t> document_start_id(const Tokenizer& tokenizer) {
  if (auto bos = tokenizer.bos_id()) return bos;
  return tokenizer.eos_id();
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const std::string file = resolve(path);
  return from_bytes(read_bytes(file), file);
}

int64_t tokenizer_vocab_size(const std::string& path) { return load_tokenizer(path)->vocab_size(); }

void check_tokenizer_fits_model(const std::string& path, int64_t model_vocab_size) {
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(path);
  MEMENTO_EXPECT(tok->vocab_size() <= model_vocab_size, DataError, path, ": the tokenizer has ",
                 tok->vocab_size(), " token ids but model.vocab_size is ", model_vocab_size,
                 "; raise model.vocab_size to at least ", tok->vocab_size(),
                 " or use a tokenizer that fits (", tok->describe(), ")");
}

std::string serialize_tokenizer_file(const std::string& path) {
  const std::string file = resolve(path);
  std::string bytes = read_bytes(file);
  const std::unique_ptr<Tokenizer> tok = from_bytes(bytes, file);  // refuses what cannot load
  if (tok->name() == "sentencepiece") return std::string(kSentencePieceTag) + base64_encode(bytes);
  MEMENTO_EXPECT(bytes.find('\0') == std::string::npos, DataError, file,
                 ": a text tokenizer file with a NUL byte at offset ", bytes.find('\0'));
  return bytes;
}

std::unique_ptr<Tokenizer> tokenizer_from_serialized(const std::string& serialized,
                                                     const std::string& source) {
  if (serialized.starts_with(kSerializedTag)) {
    MEMENTO_EXPECT(serialized.starts_with(kSentencePieceTag), DataError, source,
                   ": unknown tokenizer tag \"", serialized.substr(0, serialized.find('\n')),
                   "\", expected \"", kSentencePieceTag.substr(0, kSentencePieceTag.size() - 1),
                   "\"");
    const std::string bytes =
        base64_decode(std::string_view(serialized).substr(kSentencePieceTag.size()), source);
    return SentencePieceTokenizer::from_bytes(bytes, source);
  }
  return from_bytes(serialized, source);
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k)
      v = (v << 8) | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kBase64[(v >> (18 - 6 * k)) & 0x3F] : '=';
  }
  return out;
}

std::string base64_decode(std::string_view text, const std::string& source) {
  std::array<int, 256> value{};
  value.fill(-1);
  for (size_t i = 0; i < kBase64.size(); ++i)
    value[static_cast<unsigned char>(kBase64[i])] = static_cast<int>(i);
  MEMENTO_EXPECT(text.size() % 4 == 0, DataError, source, ": base64 text of ", text.size(),
                 " characters, expected a multiple of 4");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      const bool last_group = i + 4 == text.size();
      if (c == '=' && last_group && k >= 2 && (k == 3 || text[i + 3] == '=')) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = value[static_cast<unsigned char>(c)];
      MEMENTO_EXPECT(d >= 0 && pad == 0, DataError, source, ": bad base64 character at offset ",
                     i + k);
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    for (int k = 0; k < 3 - pad; ++k) out += static_cast<char>((v >> (16 - 8 * k)) & 0xFF);
  }
  return out;
}

}  // namespace memento

// The tokenizer.json reader against expectations derived by hand from GPT-2's and Llama 3's
// pre-tokenisation patterns and BPE merges, and against Memento's own BPE on real text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/data/bpe_tokenizer.h"
#include "core/data/hf_pretokenizer.h"
#include "core/data/hf_tokenizer.h"
#include "core/data/tokenizer.h"
#include "core/error.h"
#include "testing/expect_error.h"

namespace memento {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;
using Pieces = std::vector<std::string>;

constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

using testing::data_error_of;

std::string u(std::string_view bytes) { return HfBpeTokenizer::bytes_to_unicode(bytes); }

json gpt2_pre_tokenizer() {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", true}};
}

json llama3_pre_tokenizer() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", kLlama3Pattern}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"},
             {"add_prefix_space", false},
             {"trim_offsets", true},
             {"use_regex", false}}}}};
}

// A byte-level tokenizer.json: id b for byte b, then one id per merge, then added tokens.
json tokenizer_json(const std::vector<std::pair<std::string, std::string>>& merges,
                    const json& pre_tokenizer, bool list_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[u(std::string(1, static_cast<char>(b)))] = b;
  json merge_list = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    vocab[u(a) + u(b)] = next++;
    merge_list.push_back(list_merges ? json::array({u(a), u(b)}) : json(u(a) + " " + u(b)));
  }
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens",
           {{{"id", next},
             {"content", "<|endoftext|>"},
             {"single_word", false},
             {"lstrip", false},
             {"rstrip", false},
             {"normalized", false},
             {"special", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", ""},
            {"end_of_word_suffix", ""},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

// Merges 256.. : Ġt, he, Ġthe, in, ing, Ġa; <|endoftext|> is 262.
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {" ", "t"}, {"h", "e"}, {" t", "he"}, {"i", "n"}, {"in", "g"}, {" ", "a"}};

std::unique_ptr<HfBpeTokenizer> parse(const json& j) {
  return HfBpeTokenizer::parse(j.dump(), "t.json");
}

TEST(HfTokenizerTest, ByteToUnicodeIsGpt2s) {
  EXPECT_EQ(u(" "), "\xC4\xA0");   // Ġ U+0120
  EXPECT_EQ(u("\n"), "\xC4\x8A");  // Ċ U+010A
  EXPECT_EQ(u("a!~"), "a!~");
  EXPECT_EQ(u("\xA1"), "\xC2\xA1");  // ¡ maps to itself
  EXPECT_EQ(u("\xAD"), "\xC5\x83");  // the soft hyphen is the 68th unprintable byte: U+0143
  EXPECT_EQ(u(std::string(1, '\0')), "\xC4\x80");  // U+0100
}

TEST(HfTokenizerTest, Gpt2PreTokenizationMatchesHuggingFacesCases) {
  const auto tok = parse(tokenizer_json(kMerges, gpt2_pre_tokenizer()));
  // The cases of tokenizers/src/pre_tokenizers/byte_level.rs.
  EXPECT_EQ(
      tok->pre_tokenize("Hello my friend, how is your day going?"),
      (Pieces{"Hello", " my", " friend", ",", " how", " is", " your", " day", " going", "?"}));
  EXPECT_EQ(tok->pre_tokenize("Hello there\nHello there"),
            (Pieces{"Hello", " there", "\n", "Hello", " there"}));
  EXPECT_EQ(tok->pre_tokenize("Hello there       dear"),
            (Pieces{"Hello", " there", "      ", " dear"}));
  // Derived from the pattern: contractions, digit runs, newline runs, Unicode letters and
  // symbols, trailing spaces.
  EXPECT_EQ(tok->pre_tokenize("I'm don't they'll I'M"),
            (Pieces{"I", "'m", " don", "'t", " they", "'ll", " I", "'", "M"}));
  EXPECT_EQ(tok->pre_tokenize("year 20245, x"), (Pieces{"year", " 20245", ",", " x"}));
  EXPECT_EQ(tok->pre_tokenize("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(tok->pre_tokenize("naïve café 日本語 🙂!"),
            (Pieces{"naïve", " café", " 日本語", " 🙂!"}));
  EXPECT_EQ(tok->pre_tokenize("end  "), (Pieces{"end", "  "}));
  EXPECT_EQ(tok->pre_tokenize("hello,world"), (Pieces{"hello", ",", "world"}));
}

TEST(HfTokenizerTest, Llama3PreTokenizationSplitsDigitsInThreesAndKeepsPunctuationWithWords) {
  const auto tok = parse(tokenizer_json(kMerges, llama3_pre_tokenizer()));
  EXPECT_EQ(tok->pre_tokenize("year 12345"), (Pieces{"year", " ", "123", "45"}));
  EXPECT_EQ(tok->pre_tokenize("I'M hello,world"), (Pieces{"I", "'M", " hello", ",world"}));
  EXPECT_EQ(tok->pre_tokenize("end.\n\nNext"), (Pieces{"end", ".\n\n", "Next"}));
  EXPECT_EQ(tok->pre_tokenize("a \n\nb"), (Pieces{"a", " \n\n", "b"}));
  EXPECT_EQ(tok->pre_tokenize("Hello there       dear"),
            (Pieces{"Hello", " there", "      ", " dear"}));
  EXPECT_EQ(tok->pre_tokenize("日本語のテキスト"), (Pieces{"日本語のテキスト"}));
}

TEST(HfTokenizerTest, EncodesWithMergesByRankAndSpecialTokensInText) {
  for (bool list_merges : {false, true}) {
    SCOPED_TRACE(list_merges ? "[a, b] merges" : "\"a b\" merges");
    const auto tok = parse(tokenizer_json(kMerges, gpt2_pre_tokenizer(), list_merges));
    EXPECT_EQ(tok->vocab_size(), 263);
    EXPECT_EQ(tok->num_merges(), 6);
    // "the": (h, e) -> [t, he]; " thing": (Ġ, t) rank 0, then (i, n), then (in, g).
    EXPECT_EQ(tok->encode("the thing"), (Ids{'t', 257, 256, 'h', 260}));
    EXPECT_EQ(tok->encode(" the"), (Ids{258}));  // Ġt + he -> Ġthe
    EXPECT_EQ(tok->encode("the<|endoftext|> a"), (Ids{'t', 257, 262, 261}));
    EXPECT_EQ(tok->encode("<|endoftext|><|endoftext|>"), (Ids{262, 262}));
    EXPECT_EQ(tok->encode("<|endoftext|"),
              (Ids{'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|'}));
    EXPECT_EQ(tok->encode("a   b"), (Ids{'a', ' ', ' ', ' ', 'b'}));
    EXPECT_EQ(tok->encode("a\n\nb"), (Ids{'a', '\n', '\n', 'b'}));
    EXPECT_EQ(tok->encode("\xC3\xA9"), (Ids{0xC3, 0xA9}));  // é as its two bytes
    EXPECT_EQ(tok->encode("2024"), (Ids{'2', '0', '2', '4'}));
    EXPECT_EQ(tok->encode("it's"), (Ids{'i', 't', '\'', 's'}));
    EXPECT_TRUE(tok->encode("").empty());
    EXPECT_EQ(tok->decode({'t', 257, 262, 261}), "the<|endoftext|> a");
    EXPECT_EQ(tok->eos_id(), 262);
    EXPECT_FALSE(tok->bos_id().has_value());
  }
}

TEST(HfTokenizerTest, LowestRankMergesFirstAndLeftmostAmongEquals) {
  const auto tok =
      parse(tokenizer_json({{"b", "c"}, {"a", "b"}, {"a", "a"}}, gpt2_pre_tokenizer()));
  EXPECT_EQ(tok->encode("abc"), (Ids{'a', 256}));  // (b, c) before (a, b)
  EXPECT_EQ(tok->encode("ab"), (Ids{257}));
  EXPECT_EQ(tok->encode("aaa"), (Ids{258, 'a'}));
  EXPECT_EQ(tok->encode("aaaa"), (Ids{258, 258}));
}

TEST(HfTokenizerTest, DecodeInvertsEncodeOnAnyBytes) {
  const auto tok = parse(tokenizer_json(kMerges, llama3_pre_tokenizer()));
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
  for (const std::string& s :
       {std::string("the thing in  the\r\n\ttab 1234567 'S'LL"), std::string("naïve 🙂 ünï"),
        bytes, std::string("\xFF\xFE invalid \xC3 utf8 \xE2\x82")}) {
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
  EXPECT_NE(data_error_of([&] { tok->decode({263}); }).find("token id 263"), std::string::npos);
}

TEST(HfTokenizerTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  json j = tokenizer_json(kMerges, llama3_pre_tokenizer());
  j["model"]["vocab"][u(" xyz")] = 300;  // no merges make it
  j["added_tokens"][0]["id"] = 301;
  EXPECT_EQ(parse(j)->encode(" xyz"), (Ids{' ', 'x', 'y', 'z'}));
  j["model"]["ignore_merges"] = true;
  const auto tok = parse(j);
  EXPECT_EQ(tok->encode(" xyz thing"), (Ids{300, 256, 'h', 260}));
  EXPECT_EQ(tok->vocab_size(), 302);
  EXPECT_NE(data_error_of([&] { tok->decode({299}); }).find("not in the vocabulary"),
            std::string::npos);  // a hole between the merges and id 300
}

TEST(HfTokenizerTest, BosAndEosFromTheTemplateOrTheirNames) {
  json j = tokenizer_json(kMerges, llama3_pre_tokenizer());
  j["added_tokens"].push_back({{"id", 263}, {"content", "<|begin_of_text|>"}, {"special", true}});
  j["added_tokens"][0]["content"] = "<|end_of_text|>";
  EXPECT_EQ(parse(j)->bos_id(), 263);
  EXPECT_EQ(parse(j)->eos_id(), 262);
  j["added_tokens"].push_back({{"id", 264}, {"content", "<s>"}, {"special", true}});
  j["post_processor"] = json::parse(R"({"type": "Sequence", "processors": [
      {"type": "ByteLevel"},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}]}]})");
  const auto tok = parse(j);
  EXPECT_EQ(tok->bos_id(), 264);
  EXPECT_EQ(document_start_id(*tok), 264);
  EXPECT_EQ(tok->encode("<s>the"), (Ids{264, 't', 257}));
}

TEST(HfTokenizerTest, AddedTokensLongestFirstAndStrip) {
  json j = tokenizer_json(kMerges, gpt2_pre_tokenizer());
  j["added_tokens"].push_back({{"id", 263}, {"content", "<|end"}, {"special", false}});
  j["added_tokens"].push_back(
      {{"id", 264}, {"content", "<mask>"}, {"lstrip", true}, {"rstrip", true}});
  const auto tok = parse(j);
  EXPECT_EQ(tok->encode("<|endoftext|>"), (Ids{262}));
  EXPECT_EQ(tok->encode("<|end a"), (Ids{263, 261}));
  EXPECT_EQ(tok->encode("a  <mask>  a"), (Ids{'a', 264, 'a'}));
}

TEST(HfTokenizerTest, SplitBehavioursAndDigits) {
  auto pieces = [](const json& split, std::string_view text) {
    json j = tokenizer_json(
        kMerges,
        {{"type", "Sequence"},
         {"pretokenizers",
          {split, {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}});
    return parse(j)->pre_tokenize(text);
  };
  auto split = [](const std::string& behavior, bool invert = false) {
    return json{{"type", "Split"},
                {"pattern", {{"String", "-"}}},
                {"behavior", behavior},
                {"invert", invert}};
  };
  const std::string text = "a-b--c";
  EXPECT_EQ(pieces(split("Removed"), text), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(pieces(split("Isolated"), text), (Pieces{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(pieces(split("MergedWithPrevious"), text), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(pieces(split("MergedWithNext"), text), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(pieces(split("Contiguous"), text), (Pieces{"a", "-", "b", "--", "c"}));
  // Inverted, the text between dashes is the delimiter; adjacent dashes stay separate pieces.
  EXPECT_EQ(pieces(split("Removed", true), text), (Pieces{"-", "-", "-"}));
  EXPECT_EQ(pieces({{"type", "Digits"}, {"individual_digits", true}}, "ab123c"),
            (Pieces{"ab", "1", "2", "3", "c"}));
  EXPECT_EQ(pieces({{"type", "Digits"}, {"individual_digits", false}}, "ab123c"),
            (Pieces{"ab", "123", "c"}));
  json prefixed = tokenizer_json(kMerges, {{"type", "ByteLevel"}, {"add_prefix_space", true}});
  EXPECT_EQ(parse(prefixed)->pre_tokenize("the end"), (Pieces{" the", " end"}));
  EXPECT_EQ(parse(prefixed)->encode("the"), (Ids{258}));
}

TEST(HfTokenizerTest, UnsupportedFeaturesNameTheFileAndKey) {
  auto error_of = [](json j) {
    return data_error_of([&] { HfBpeTokenizer::parse(j.dump(), "tok.json"); });
  };
  const json base = tokenizer_json(kMerges, gpt2_pre_tokenizer());
  json j = base;
  j["model"]["type"] = "WordPiece";
  EXPECT_NE(error_of(j).find("tok.json: model.type \"WordPiece\" is not supported"),
            std::string::npos)
      << error_of(j);
  j = base;
  j["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  EXPECT_NE(error_of(j).find("model.type \"Unigram\""), std::string::npos);
  j = base;
  j["model"]["byte_fallback"] = true;
  EXPECT_NE(error_of(j).find("tok.json: model.byte_fallback = true is not supported"),
            std::string::npos);
  j = base;
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(error_of(j).find("model.dropout"), std::string::npos);
  j = base;
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(error_of(j).find("tok.json: normalizer.type \"Lowercase\" is not supported"),
            std::string::npos);
  j = base;
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Strip"}}}}};
  EXPECT_NE(error_of(j).find("normalizer.normalizers[0].type \"Strip\""), std::string::npos)
      << error_of(j);
  j = base;
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}};
  EXPECT_NE(error_of(j).find("pre_tokenizer.pretokenizers[0].type \"Whitespace\""),
            std::string::npos);
  j = base;
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  EXPECT_NE(error_of(j).find("pre_tokenizer.type \"Metaspace\""), std::string::npos);
  j = base;
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(error_of(j).find("no ByteLevel step"), std::string::npos);
  j = base;
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(error_of(j).find("decoder.type \"WordPiece\""), std::string::npos);
  j = base;
  j["model"]["merges"].push_back("x yz");
  EXPECT_NE(error_of(j).find("model.merges[6]: token \"yz\" is not in model.vocab"),
            std::string::npos);
  j = base;
  j["model"]["vocab"].erase(u("\n"));
  EXPECT_NE(error_of(j).find("model.vocab has no token for byte 10"), std::string::npos);
  j = base;
  j["pre_tokenizer"] = llama3_pre_tokenizer();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_NE(error_of(j).find("pre_tokenizer.pretokenizers[0].pattern.Regex: regular expression"),
            std::string::npos);
  j = base;
  j["added_tokens"][0]["single_word"] = true;
  EXPECT_NE(error_of(j).find("added_tokens[0].single_word"), std::string::npos);
  EXPECT_NE(data_error_of([] {
              HfBpeTokenizer::parse("{\"model\": ", "tok.json");
            }).find("tok.json: not valid JSON"),
            std::string::npos);
}

TEST(HfTokenizerTest, NfcNormalizerComposesWhereIcuIsBuiltIn) {
  json j = tokenizer_json(kMerges, gpt2_pre_tokenizer());
  j["normalizer"] = {{"type", "NFC"}};
  if (!Normalizer::normalizers_available()) {
    EXPECT_NE(data_error_of([&] { parse(j); }).find("normalizer.type \"NFC\" needs"),
              std::string::npos);
    return;
  }
  const auto tok = parse(j);
  // e + COMBINING ACUTE ACCENT composes to U+00E9; the special token is not normalised.
  EXPECT_EQ(tok->encode("e\xCC\x81<|endoftext|>"), (Ids{0xC3, 0xA9, 262}));
  EXPECT_EQ(tok->decode(tok->encode("cafe\xCC\x81")), "caf\xC3\xA9");
}

// A Memento BPE written as a GPT-2 tokenizer.json encodes every GPT-2 piece that Memento's
// chunker also keeps whole exactly as Memento does: the same merges by the same ranks.
TEST(HfTokenizerTest, AgreesWithMementoBpeOnRealText) {
  std::string text;
  for (const char* name : {"fortunes", "literature", "science"}) {
    std::ifstream in(std::filesystem::path("/usr/share/games/fortunes") / name, std::ios::binary);
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(text.size(), 100000u) << "the fortunes corpus is missing (scripts/install_deps.sh)";
  text.resize(200000);
  std::vector<std::string> docs;
  for (size_t i = 0; i < text.size(); i += 2000) docs.push_back(text.substr(i, 2000));
  const BpeTokenizer bpe = BpeTokenizer::train(docs, 700);
  json vocab = json::object();
  json merges = json::array();
  for (int id = 0; id < bpe.vocab_size(); ++id) {
    if (id == BpeTokenizer::kEot) continue;
    ASSERT_FALSE(vocab.contains(u(bpe.piece(id)))) << "two merges make " << bpe.piece(id);
    vocab[u(bpe.piece(id))] = id;
  }
  // Merge k's parts are the pieces whose concatenation is piece 257 + k, in training order.
  const std::string serialized = bpe.serialize();
  std::istringstream lines(serialized);
  std::string line;
  std::getline(lines, line);
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    int a = 0, b = 0;
    f >> a >> b;
    merges.push_back(u(bpe.piece(a)) + " " + u(bpe.piece(b)));
  }
  json j = tokenizer_json({}, gpt2_pre_tokenizer());
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  j["added_tokens"][0]["id"] = BpeTokenizer::kEot;
  const auto hf = parse(j);
  ASSERT_EQ(hf->vocab_size(), bpe.vocab_size());
  int compared = 0;
  for (const std::string& doc : docs) {
    for (const std::string& piece : hf->pre_tokenize(doc)) {
      if (BpeTokenizer::split_chunks(piece).size() != 1) continue;
      ASSERT_EQ(hf->encode(piece), bpe.encode(piece)) << "piece \"" << piece << "\"";
      ++compared;
    }
    ASSERT_EQ(hf->decode(hf->encode(doc)), doc);
  }
  EXPECT_GT(compared, 20000);
}

}  // namespace
}  // namespace memento

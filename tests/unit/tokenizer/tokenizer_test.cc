// SPDX-License-Identifier: MIT
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io/gguf_writer.h"
#include "tokenizer_test_util.h"

namespace kvq {
namespace {

const std::string kShared = KVQ_SHARED_DIR;
const std::string kGolden = kShared + "/golden/tokenizer/";

// Loaded once per vocabulary; a load failure aborts the test with the reason.
const Tokenizer* load(const std::string& model) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[model];
  if (!slot) {
    slot = load_tokenizer(kShared + "/models/" + model + ".gguf");
  }
  return slot.get();
}

// --- llama.cpp goldens -------------------------------------------------------------------------

class Golden : public testing::TestWithParam<GoldenCase> {};

// llama-tokenize got each text file byte for byte: war_and_peace_excerpt.txt ends in "\n\n" and
// its goldens end in two newline tokens (13, 13 in the LLaMA vocab), while the other files end
// without a newline; nothing is stripped or added. wiki_head.txt starts with a space, which
// the space prefix doubles (the golden starts 1, 259 = "▁▁").
TEST_P(Golden, MatchesLlamaCpp) {
  const GoldenCase& c = GetParam();
  const Tokenizer* tok = load(c.vocab);
  ASSERT_NE(tok, nullptr);
  const std::string text = read_bytes(kGolden + c.text + ".txt");
  const std::string ids_name = kGolden + golden_ids_name(c);
  const std::vector<int32_t> want = parse_ids(read_bytes(ids_name));
  ASSERT_FALSE(text.empty());
  ASSERT_FALSE(want.empty()) << ids_name;
  expect_same_ids(tok->encode(text, /*add_bos=*/true, c.parse_special), want, ids_name);
}

INSTANTIATE_TEST_SUITE_P(
    Tokenizer, Golden,
    testing::Values(GoldenCase{"stories260K", "mixed_unicode", true},
                    GoldenCase{"stories260K", "wiki_head", true},
                    GoldenCase{"stories260K", "tinystories_head", true},
                    GoldenCase{"stories260K", "war_and_peace_excerpt", true},
                    GoldenCase{"llama-spm-vocab-only", "mixed_unicode", true},
                    GoldenCase{"llama-spm-vocab-only", "wiki_head", true},
                    GoldenCase{"llama-spm-vocab-only", "tinystories_head", true},
                    GoldenCase{"llama-spm-vocab-only", "war_and_peace_excerpt", true},
                    GoldenCase{"llama-spm-vocab-only", "mixed_unicode", false}),
    golden_case_name);

// decode(encode(t)) gives t back: the space prefix is dropped from the first piece, unless a BOS
// comes first (llama_detokenize drops at most one space, from the first token only).
TEST(Tokenizer, DecodeRoundTripsGoldenTexts) {
  for (const char* model : {"stories260K", "llama-spm-vocab-only"}) {
    const Tokenizer* tok = load(model);
    ASSERT_NE(tok, nullptr);
    for (const char* name : {"mixed_unicode", "wiki_head", "tinystories_head",
                             "war_and_peace_excerpt"}) {
      const std::string text = read_bytes(kGolden + name + ".txt");
      ASSERT_FALSE(text.empty());
      EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text) << model << " " << name;
      EXPECT_EQ(tok->decode(tok->encode(text, true, false)), " " + text) << model << " " << name;
    }
  }
}

// With parse_special, "<s>" and "</s>" become control tokens, which print nothing.
TEST(Tokenizer, ControlTokensPrintNothing) {
  const Tokenizer* tok = load("llama-spm-vocab-only");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = tok->encode("a<s>b</s>", false, true);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  EXPECT_EQ(tok->decode(ids), "a b");  // the space prefix after a special token stays
  EXPECT_EQ(tok->token_to_piece(1), "");
  EXPECT_EQ(tok->token_to_piece(0), "");  // <unk> (UNKNOWN) too, with special=false
  EXPECT_EQ(tok->token_to_piece(13), "\n");  // <0x0A>
  EXPECT_TRUE(tok->is_eog(tok->eos_id()));
  EXPECT_FALSE(tok->is_eog(tok->bos_id()));
}

// Characters outside the 512-token vocabulary fall back to their UTF-8 bytes, <0x00> being
// token 3 there.
TEST(Tokenizer, ByteFallback) {
  const Tokenizer* tok = load("stories260K");
  ASSERT_NE(tok, nullptr);
  const std::string text = "日本語";
  const std::vector<int32_t> ids = tok->encode(text, false, true);
  ASSERT_EQ(ids.size(), 1 + text.size());
  EXPECT_EQ(tok->token_to_piece(ids[0]), " ");
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_EQ(ids[1 + i], 3 + uint8_t(text[i]));
    EXPECT_EQ(tok->token_to_piece(ids[1 + i]), text.substr(i, 1));
  }
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(Tokenizer, EmptyText) {
  const Tokenizer* tok = load("stories260K");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->encode("", true, true), std::vector<int32_t>{1});
  EXPECT_TRUE(tok->encode("", false, true).empty());
  EXPECT_EQ(tok->decode({}), "");
}

// Valid UTF-8 with NULs and control bytes round-trips exactly (the 512 vocab has every byte).
TEST(Tokenizer, Utf8WithNulsRoundTrips) {
  const Tokenizer* tok = load("stories260K");
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> alphabet = {
      std::string(1, '\0'), " ", "  ", "\n", "\t", "\x7f", "a", "Z", "é", "日", "€", "😀", "<s>"};
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    for (int n = int(rng() % 40); n > 0; --n) s += alphabet[rng() % alphabet.size()];
    EXPECT_EQ(tok->decode(tok->encode(s, false, false)), s);
  }
}

// Invalid or truncated UTF-8 never crashes and yields valid ids. It does not always round-trip,
// in llama.cpp either: a lead byte swallows the following (escaped) space into one symbol, so
// that space falls back to the bytes of "▁" and decodes as "▁", not " ".
TEST(Tokenizer, InvalidUtf8DoesNotCrash) {
  const Tokenizer* tok = load("stories260K");
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> cases = {"\xff\xfe\xfd", "\xe2\x96", "x\xf0", "\x80\x80\xc3",
                                    std::string("\xc3\0", 2)};
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = char(rng() % 4 == 0 ? ' ' : rng() % 256);
    cases.push_back(s);
  }
  for (const std::string& s : cases) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok->encode(s, special, special);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->n_vocab());
      (void)tok->decode(ids);
    }
  }
  EXPECT_EQ(tok->decode(tok->encode("\xe6 ", false, false)), "\xe6\xe2\x96\x81");
  // Ids outside the vocabulary print nothing.
  EXPECT_EQ(tok->token_to_piece(-1), "");
  EXPECT_EQ(tok->token_to_piece(1 << 30), "");
}

// The whole 2.1 MB TinyStories head in one call (a single fragment: no special text in it).
TEST(Tokenizer, LargeInputRoundTrips) {
  const Tokenizer* tok = load("llama-spm-vocab-only");
  ASSERT_NE(tok, nullptr);
  expect_large_input_round_trips(*tok, " ");  // the space prefix stays after the BOS
}

// --- small in-memory vocabularies ---------------------------------------------------------------

struct VocabSpec {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁a", "<x>"};
  std::vector<float> scores = {0, 0, 0, -1, -1, -1, -2, -3, 0};
  std::vector<int32_t> types = {2, 3, 3, 1, 1, 1, 1, 1, 4};
  std::string model = "llama";
  bool write_tokens = true, write_scores = true, write_types = true, write_model = true;
};

StatusOr<Tokenizer> build(const VocabSpec& spec, void (*extra)(GgufWriter&) = nullptr) {
  GgufWriter w;
  if (spec.write_model) w.add_string("tokenizer.ggml.model", spec.model);
  if (spec.write_tokens) w.add_string_array("tokenizer.ggml.tokens", spec.tokens);
  if (spec.write_scores) w.add_f32_array("tokenizer.ggml.scores", spec.scores);
  if (spec.write_types) w.add_i32_array("tokenizer.ggml.token_type", spec.types);
  if (extra) extra(w);
  return tokenizer_from_writer(w);
}

TEST(TokenizerSmall, HigherScoreMergesFirst) {
  VocabSpec spec;
  auto tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  // "ab" (-2) beats "▁a" (-3); "▁ab" is not a token, so the result stays split.
  EXPECT_EQ(tok->encode("ab", false, true), (std::vector<int32_t>{3, 6}));
  spec.scores[6] = -4;
  tok = build(spec);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(tok->encode("ab", false, true), (std::vector<int32_t>{7, 5}));
}

TEST(TokenizerSmall, SpecialTokenPartition) {
  auto tok = build(VocabSpec{});
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  // USER_DEFINED "<x>" is split out even without parse_special; CONTROL "<s>" only with it.
  // A raw fragment after a special token gets the space prefix again.
  EXPECT_EQ(tok->encode("a<x>b", false, false), (std::vector<int32_t>{7, 8, 3, 5}));
  EXPECT_EQ(tok->encode("<s>a", true, true), (std::vector<int32_t>{1, 1, 7}));
  const std::vector<int32_t> raw = tok->encode("<s>", false, false);
  EXPECT_EQ(std::count(raw.begin(), raw.end(), 1), 0);
  EXPECT_EQ(tok->token_to_piece(8), "<x>");
  EXPECT_EQ(tok->token_to_piece(7), " a");
  // No byte tokens in this vocab: unknown characters become <unk>.
  EXPECT_EQ(tok->encode("z", false, true), (std::vector<int32_t>{3, 0}));
}

TEST(TokenizerSmall, MetadataKeys) {
  auto tok = build(VocabSpec{}, [](GgufWriter& w) {
    w.add_u32("tokenizer.ggml.bos_token_id", 2);
    w.add_u32("tokenizer.ggml.eos_token_id", 1);
    w.add_bool("tokenizer.ggml.add_bos_token", false);
    w.add_bool("tokenizer.ggml.add_space_prefix", false);
  });
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->bos_id(), 2);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->encode("a", true, true), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{7}), " a");  // no prefix to strip
}

TEST(TokenizerSmall, Errors) {
  auto expect_error = [](const VocabSpec& spec, StatusCode code, const std::string& needle,
                         void (*extra)(GgufWriter&) = nullptr) {
    expect_load_error(build(spec, extra), code, needle);
  };
  VocabSpec s;
  s.model = "bert";
  expect_error(s, StatusCode::kUnimplemented, "bert");
  s = {};
  s.write_model = false;
  expect_error(s, StatusCode::kNotFound, "tokenizer.ggml.model");
  s = {};
  s.write_tokens = false;
  expect_error(s, StatusCode::kNotFound, "tokenizer.ggml.tokens");
  s = {};
  s.write_scores = false;
  expect_error(s, StatusCode::kNotFound, "tokenizer.ggml.scores");
  s = {};
  s.scores.pop_back();
  expect_error(s, StatusCode::kInvalidArgument, "tokenizer.ggml.scores");
  s = {};
  s.types.push_back(1);
  expect_error(s, StatusCode::kInvalidArgument, "tokenizer.ggml.token_type");
  s = {};
  s.tokens = {}, s.scores = {}, s.types = {};
  expect_error(s, StatusCode::kInvalidArgument, "empty");
  s = {};
  s.tokens[5] = "a";
  expect_error(s, StatusCode::kInvalidArgument, "same text");
  s = {};
  s.types[4] = 6;  // BYTE type on "a"
  expect_error(s, StatusCode::kInvalidArgument, "<0xXX>");
  expect_error({}, StatusCode::kInvalidArgument, "bos_token_id",
               [](GgufWriter& w) { w.add_u32("tokenizer.ggml.bos_token_id", 9); });
  expect_error({}, StatusCode::kInvalidArgument, "unknown_token_id",
               [](GgufWriter& w) { w.add_i32("tokenizer.ggml.unknown_token_id", -1); });
  expect_error({}, StatusCode::kInvalidArgument, "add_bos_token",
               [](GgufWriter& w) { w.add_u32("tokenizer.ggml.add_bos_token", 1); });
  // Defaults (BOS 1, EOS 2) must exist too.
  s = {};
  s.tokens = {"<unk>", "a"}, s.scores = {0, 0}, s.types = {2, 1};
  expect_error(s, StatusCode::kInvalidArgument, "eos_token_id");
}

// "<|end|>" is auto-detected as control and end-of-generation; for a model named Phi-3,
// llama.cpp also strips the whitespace after such special tokens.
TEST(TokenizerSmall, Phi3StripsAfterSpecialTokens) {
  VocabSpec s;
  s.tokens.push_back("<|end|>"), s.scores.push_back(0), s.types.push_back(1);
  auto plain = build(s);
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_TRUE(plain->is_eog(9));
  EXPECT_EQ(plain->token_to_piece(9), "");
  EXPECT_EQ(plain->encode("<|end|>  a", false, true), (std::vector<int32_t>{9, 3, 3, 7}));
  auto phi = build(s, [](GgufWriter& w) { w.add_string("general.name", "Phi-3 mini"); });
  ASSERT_TRUE(phi.ok()) << phi.status().to_string();
  EXPECT_EQ(phi->encode("<|end|>  a", false, true), (std::vector<int32_t>{9, 7}));
}

// No token types: all NORMAL, nothing is special; empty texts are renamed as in llama.cpp.
TEST(TokenizerSmall, WithoutTokenTypes) {
  VocabSpec s;
  s.write_types = false;
  s.tokens[8] = "";
  auto tok = build(s);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->token_to_piece(1), "<s>");
  EXPECT_EQ(tok->token_to_piece(8), "[EMPTY_8]");
  const std::vector<int32_t> ids = tok->encode("<s>", false, true);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 0);
}

}  // namespace
}  // namespace kvq

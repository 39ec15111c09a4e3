// SPDX-License-Identifier: MIT
// Byte-level BPE against llama.cpp: llama-tokenize goldens and test-tokenizer-0's own cases for
// the full Llama-3 (llama-bpe), Qwen2 and GPT-2 vocabularies (../shared/fixtures/bpe, see its
// README), plus small in-memory vocabularies for merge order and malformed files.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_class.h"
#include "tokenizer_test_util.h"

namespace kvq {
namespace {

const std::string kShared = KVQ_SHARED_DIR;
const std::string kFixtures = kShared + "/fixtures/bpe/";
const char* const kVocabs[] = {"llama-bpe", "qwen2", "gpt-2"};

const Tokenizer* load(const std::string& vocab) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[vocab];
  if (!slot) slot = load_tokenizer(kFixtures + "vocab/ggml-vocab-" + vocab + ".gguf");
  return slot.get();
}

// The golden texts: four shared ones and two of the fixtures (see fixtures/README.md).
std::string golden_text(const std::string& name) {
  if (name == "chat_special" || name == "chktxt") {
    return read_bytes(kFixtures + "golden/" + name + ".txt");
  }
  return read_bytes(kShared + "/golden/tokenizer/" + name + ".txt");
}
const char* const kTexts[] = {"mixed_unicode", "tinystories_head", "war_and_peace_excerpt",
                              "wiki_head",     "chat_special",     "chktxt"};

// test-tokenizer-0's format: texts separated by "\n__ggml_vocab_test__\n" (the file ends with
// one), and one line of space-separated ids per text.
struct LlamaCppCase {
  std::string text;
  std::vector<int32_t> ids;
};
std::vector<LlamaCppCase> llamacpp_cases(const std::string& vocab) {
  const std::string base = kFixtures + "llamacpp-tests/ggml-vocab-" + vocab + ".gguf";
  const std::string inp = read_bytes(base + ".inp");
  const std::string out = read_bytes(base + ".out");
  static const std::string kSep = "\n__ggml_vocab_test__\n";
  std::vector<LlamaCppCase> cases;
  for (size_t pos = 0, next; (next = inp.find(kSep, pos)) != std::string::npos;) {
    cases.push_back({inp.substr(pos, next - pos), {}});
    pos = next + kSep.size();
  }
  size_t line = 0;
  for (size_t pos = 0; pos < out.size() && line < cases.size(); ++line) {
    const size_t end = std::min(out.find('\n', pos), out.size());
    cases[line].ids = parse_ids(out.substr(pos, end - pos));
    pos = end + 1;
  }
  EXPECT_EQ(line, cases.size()) << base << ": fewer .out lines than .inp texts";
  return cases;
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> cases;
  for (const char* vocab : {"ggml-vocab-llama-bpe", "ggml-vocab-qwen2", "ggml-vocab-gpt-2"}) {
    for (const char* text : kTexts) {
      cases.push_back({vocab, text, true});
      const std::string t = text;
      if (t == "mixed_unicode" || t == "chat_special" || t == "chktxt") {
        cases.push_back({vocab, text, false});
      }
    }
  }
  return cases;
}

class BpeGolden : public testing::TestWithParam<GoldenCase> {};

// llama-tokenize --ids: BOS only where the vocabulary asks for one (llama-bpe).
TEST_P(BpeGolden, MatchesLlamaTokenize) {
  const GoldenCase& c = GetParam();
  const Tokenizer* tok = load(std::string(c.vocab).substr(strlen("ggml-vocab-")));
  ASSERT_NE(tok, nullptr);
  const std::string text = golden_text(c.text);
  const std::string ids_name = kFixtures + "golden/" + golden_ids_name(c);
  const std::vector<int32_t> want = parse_ids(read_bytes(ids_name));
  ASSERT_FALSE(text.empty());
  ASSERT_FALSE(want.empty()) << ids_name;
  expect_same_ids(tok->encode(text, tok->add_bos(), c.parse_special), want, ids_name);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, BpeGolden, testing::ValuesIn(golden_cases()),
                         golden_case_name);

// test-tokenizer-0: no BOS, special tokens not parsed.
TEST(Bpe, LlamaCppTokenizerTests) {
  for (const char* vocab : kVocabs) {
    const Tokenizer* tok = load(vocab);
    ASSERT_NE(tok, nullptr);
    const std::vector<LlamaCppCase> cases = llamacpp_cases(vocab);
    ASSERT_EQ(cases.size(), 46u) << vocab;
    for (size_t i = 0; i < cases.size(); ++i) {
      expect_same_ids(tok->encode(cases[i].text, false, false), cases[i].ids,
                      std::string(vocab) + " case " + std::to_string(i));
    }
  }
}

// decode(encode(t)) == t for every golden text and llama.cpp case; a BOS prints nothing.
TEST(Bpe, DecodeRoundTrips) {
  for (const char* vocab : kVocabs) {
    const Tokenizer* tok = load(vocab);
    ASSERT_NE(tok, nullptr);
    std::vector<std::string> texts;
    for (const char* name : kTexts) texts.push_back(golden_text(name));
    for (const LlamaCppCase& c : llamacpp_cases(vocab)) texts.push_back(c.text);
    for (const std::string& text : texts) {
      EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text) << vocab;
      EXPECT_EQ(tok->decode(tok->encode(text, true, false)), text) << vocab;
    }
  }
}

TEST(Bpe, VocabularyMetadata) {
  const Tokenizer* llama = load("llama-bpe");
  const Tokenizer* qwen = load("qwen2");
  const Tokenizer* gpt2 = load("gpt-2");
  ASSERT_TRUE(llama && qwen && gpt2);
  EXPECT_EQ(llama->model(), "gpt2");
  EXPECT_EQ(llama->n_vocab(), 128256);
  EXPECT_EQ(llama->bos_id(), 128000);
  EXPECT_EQ(llama->eos_id(), 128001);
  EXPECT_TRUE(llama->add_bos());
  EXPECT_TRUE(llama->is_eog(128009));  // <|eot_id|>
  EXPECT_EQ(qwen->n_vocab(), 151936);
  EXPECT_EQ(qwen->bos_id(), 151643);
  EXPECT_EQ(qwen->eos_id(), 151645);
  EXPECT_FALSE(qwen->add_bos());
  EXPECT_TRUE(qwen->is_eog(151643));  // <|endoftext|>
  EXPECT_EQ(gpt2->n_vocab(), 50257);
  EXPECT_EQ(gpt2->bos_id(), 50256);
  EXPECT_FALSE(gpt2->add_bos());
  // Control tokens print nothing, user-defined ones their text, normal ones their bytes.
  EXPECT_EQ(llama->token_to_piece(128000), "");
  EXPECT_EQ(qwen->token_to_piece(151667), "<think>");
  EXPECT_EQ(qwen->token_to_piece(151935), "");  // [PAD] (unused)
  EXPECT_EQ(gpt2->token_to_piece(220), " ");
  EXPECT_EQ(gpt2->token_to_piece(198), "\n");
  EXPECT_EQ(gpt2->decode(gpt2->encode("Hello world", false, true)), "Hello world");
}

// Malformed UTF-8 becomes U+FFFD before the byte mapping, as in llama.cpp; ids stay in range.
TEST(Bpe, InvalidUtf8) {
  for (const char* vocab : kVocabs) {
    const Tokenizer* tok = load(vocab);
    ASSERT_NE(tok, nullptr);
    // A truncated sequence is one U+FFFD for its lead byte and one per stray continuation.
    EXPECT_EQ(tok->decode(tok->encode("a\xff" "b\xe2\x96", false, true)),
              "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd");
    EXPECT_EQ(tok->decode(tok->encode("\xf4\x90\x80\x80", false, true)), "\xef\xbf\xbd");
  }
}

// The 2.1 MB TinyStories head in one call, through the Llama-3 vocabulary.
TEST(Bpe, LargeInputRoundTrips) {
  const Tokenizer* tok = load("llama-bpe");
  ASSERT_NE(tok, nullptr);
  expect_large_input_round_trips(*tok, "");
}

// --- pre-tokenizers -----------------------------------------------------------------------------

std::vector<std::string> words_of(PreTokenizer pre, const std::string& text) {
  const std::vector<uint32_t> cpts = decode_utf8(text);
  std::vector<size_t> lengths;
  pre_tokenize(pre, cpts, &lengths);
  std::vector<std::string> words;
  size_t start = 0;
  for (size_t n : lengths) {
    std::string w;
    for (size_t i = start; i < start + n; ++i) append_utf8(cpts[i], &w);
    words.push_back(w);
    start += n;
  }
  EXPECT_EQ(start, cpts.size());
  return words;
}

TEST(PreTokenizer, Splits) {
  using V = std::vector<std::string>;
  EXPECT_EQ(words_of(PreTokenizer::kGpt2, "Hello, world! 12345  x"),
            (V{"Hello", ",", " world", "!", " 12345", " ", " x"}));
  EXPECT_EQ(words_of(PreTokenizer::kLlama3, "I'M  12345\n\n x"),
            (V{"I", "'M", " ", " ", "123", "45", "\n\n", " x"}));
  EXPECT_EQ(words_of(PreTokenizer::kQwen2, "ab12 \xc3\xa9t\xc3\xa9"),
            (V{"ab", "1", "2", " \xc3\xa9t\xc3\xa9"}));
  // The default: punctuation runs, then GPT-2's rules, then digit runs, then 3-digit groups.
  EXPECT_EQ(words_of(PreTokenizer::kDefault, "Hello, world! 12345"),
            (V{"Hello", ",", " world", "!", " ", "123", "45"}));
  EXPECT_TRUE(words_of(PreTokenizer::kDefault, "").empty());
  EXPECT_EQ(char_class(0x00A0), CharClass::kSpace);
  EXPECT_EQ(char_class(0x0663), CharClass::kNumber);  // ARABIC-INDIC DIGIT THREE
  EXPECT_EQ(char_class(0x0301), CharClass::kOther);   // combining acute: a mark, not \p{L}
  EXPECT_EQ(char_class(0x4E00), CharClass::kLetter);
  EXPECT_EQ(char_class(0x110000), CharClass::kOther);
}

TEST(PreTokenizer, UnknownNameIsAnError) {
  auto pre = pre_tokenizer_from_name("tekken");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(pre.status().message().find("\"tekken\""), std::string::npos);
}

// --- small in-memory vocabularies ---------------------------------------------------------------

// "Ġ" is GPT-2's stand-in for the space byte.
struct BpeSpec {
  std::vector<std::string> tokens = {"a", "b", "c", "Ġ", "ab", "bc", "Ġa", "<|end|>", "<u>"};
  std::vector<int32_t> types = {1, 1, 1, 1, 1, 1, 1, 3, 4};
  std::vector<std::string> merges = {"a b", "b c", "Ġ a"};
  std::string pre = "gpt-2";
  bool write_merges = true;
  uint32_t bos = 7;
  int add_bos = -1, add_eos = -1;  // -1: key absent
};

StatusOr<Tokenizer> build(const BpeSpec& spec) {
  GgufWriter w;
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", spec.pre);
  w.add_string_array("tokenizer.ggml.tokens", spec.tokens);
  w.add_i32_array("tokenizer.ggml.token_type", spec.types);
  if (spec.write_merges) w.add_string_array("tokenizer.ggml.merges", spec.merges);
  w.add_u32("tokenizer.ggml.bos_token_id", spec.bos);
  w.add_u32("tokenizer.ggml.eos_token_id", 7);
  if (spec.add_bos >= 0) w.add_bool("tokenizer.ggml.add_bos_token", spec.add_bos);
  if (spec.add_eos >= 0) w.add_bool("tokenizer.ggml.add_eos_token", spec.add_eos);
  return tokenizer_from_writer(w);
}

TEST(BpeSmall, LowerRankMergesFirst) {
  BpeSpec spec;
  auto tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("abc", false, true), (std::vector<int32_t>{4, 2}));
  EXPECT_EQ(tok->encode(" abc", false, true), (std::vector<int32_t>{3, 4, 2}));  // "ab" first
  spec.merges = {"b c", "a b", "Ġ a"};
  tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("abc", false, true), (std::vector<int32_t>{0, 5}));
  EXPECT_EQ(tok->encode(" abc", false, true), (std::vector<int32_t>{6, 5}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{6, 5}), " abc");
  // Characters without a token are dropped, as llama.cpp does ("d" maps to no token).
  EXPECT_EQ(tok->encode("adb", false, true), (std::vector<int32_t>{0, 1}));
}

TEST(BpeSmall, SpecialTokens) {
  auto tok = build(BpeSpec{});
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("a<|end|>b<u>", true, true), (std::vector<int32_t>{7, 0, 7, 1, 8}));
  EXPECT_EQ(tok->encode("<u>", false, false), (std::vector<int32_t>{8}));
  EXPECT_FALSE(tok->add_bos());  // gpt-2 pre-tokenizer: no BOS by default
  EXPECT_TRUE(tok->is_eog(7));
  EXPECT_EQ(tok->token_to_piece(7), "");
  EXPECT_EQ(tok->token_to_piece(8), "<u>");
}

// BOS defaults by pre-tokenizer (Llama-3 adds one), and the GGUF flags override the defaults.
TEST(BpeSmall, BosAndEosFlags) {
  BpeSpec spec;
  auto tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_FALSE(tok->add_bos());
  EXPECT_FALSE(tok->add_eos());
  spec.pre = "llama-bpe";
  tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_TRUE(tok->add_bos());
  spec.add_bos = 0, spec.add_eos = 1;
  tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_FALSE(tok->add_bos());
  EXPECT_TRUE(tok->add_eos());
  spec = {};
  spec.pre = "";  // absent or empty: llama.cpp's default pre-tokenizer
  tok = build(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("ab c", false, true), (std::vector<int32_t>{4, 3, 2}));
}

TEST(BpeSmall, Errors) {
  auto expect_error = [](const BpeSpec& spec, StatusCode code, const std::string& needle) {
    expect_load_error(build(spec), code, needle);
  };
  BpeSpec s;
  s.write_merges = false;
  expect_error(s, StatusCode::kNotFound, "tokenizer.ggml.merges");
  s = {};
  s.merges[1] = "bc";
  expect_error(s, StatusCode::kInvalidArgument, "tokenizer.ggml.merges[1] = \"bc\"");
  s = {};
  s.merges[2] = "a ";
  expect_error(s, StatusCode::kInvalidArgument, "tokenizer.ggml.merges[2]");
  s = {};
  s.pre = "superbpe";
  expect_error(s, StatusCode::kUnimplemented, "\"superbpe\"");
  s = {};
  s.bos = 9;
  expect_error(s, StatusCode::kInvalidArgument, "bos_token_id = 9");
  s = {};
  s.types.pop_back();
  expect_error(s, StatusCode::kInvalidArgument, "tokenizer.ggml.token_type");
}

}  // namespace
}  // namespace kvq

// SPDX-License-Identifier: MIT
// Helpers shared by the tokenizer tests: fixture files and llama-tokenize id lists.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "tokenizer/tokenizer.h"

namespace kvq {

// Whole file, bytes as they are. A missing file fails the calling test (never a skip).
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "missing shared file " << path;
    return {};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "[1, 15043, ...]" as written by llama-tokenize --ids, or " 1 15043" as in llama.cpp's
// test-tokenizer-0 .out files: every run of digits is one id.
inline std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < s.size();) {
    if (s[i] >= '0' && s[i] <= '9') {
      size_t end = i;
      ids.push_back(int32_t(std::stol(s.substr(i), &end)));
      i += end;
    } else {
      ++i;
    }
  }
  return ids;
}

// A tokenizer from a GGUF file; a failure fails the calling test and returns null.
inline std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  auto file = GgufFile::open(path);
  if (!file.ok()) {
    ADD_FAILURE() << path << ": " << file.status().to_string();
    return nullptr;
  }
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok.ok()) {
    ADD_FAILURE() << path << ": " << tok.status().to_string();
    return nullptr;
  }
  return std::make_unique<Tokenizer>(std::move(*tok));
}

// Ids equal to llama.cpp's, reporting the first mismatch (not thousands of them).
inline void expect_same_ids(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                            const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << what << ": first mismatch at token " << i;
  }
}

// One llama-tokenize golden: a vocabulary, a text and whether special tokens were parsed.
struct GoldenCase {
  const char* vocab;
  const char* text;
  bool parse_special;
};

// "<vocab>.<text>[.no-parse-special].ids.txt", the golden's file name.
inline std::string golden_ids_name(const GoldenCase& c) {
  return std::string(c.vocab) + "." + c.text + (c.parse_special ? "" : ".no-parse-special") +
         ".ids.txt";
}

// A GoogleTest parameter name: "<vocab>_<text>[_no_parse_special]", '_' for what is not a
// letter or digit.
inline std::string golden_case_name(const testing::TestParamInfo<GoldenCase>& info) {
  const GoldenCase& c = info.param;
  std::string name =
      std::string(c.vocab) + "_" + c.text + (c.parse_special ? "" : "_no_parse_special");
  for (char& c : name) {
    if (!isalnum(uint8_t(c))) c = '_';
  }
  return name;
}

// A load that must fail with `code` and a message containing `needle`.
inline void expect_load_error(const StatusOr<Tokenizer>& tok, StatusCode code,
                              const std::string& needle) {
  ASSERT_FALSE(tok.ok()) << needle;
  EXPECT_EQ(tok.status().code(), code) << tok.status().to_string();
  EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status().to_string();
}

// The whole 2.1 MB TinyStories head in one call, with a BOS: under 5 s, and decoding gives
// `prefix` + the text back.
// The whole input in one call round-trips. The time is printed, not asserted: speed lives in
// bench/tokenizer (a quadratic regression would still hit the test's ctest timeout).
inline void expect_large_input_round_trips(const Tokenizer& tok, const std::string& prefix) {
  const std::string text = read_bytes(std::string(KVQ_SHARED_DIR) +
                                      "/text/tinystories/train_head.txt");
  ASSERT_GT(text.size(), 2'000'000u);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.encode(text, true, true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), s);
  EXPECT_EQ(tok.decode(ids), prefix + text);
}

// A tokenizer from an in-memory GGUF. Tokenizer copies everything it keeps, so the bytes may
// die with this function.
inline StatusOr<Tokenizer> tokenizer_from_writer(const GgufWriter& w) {
  const std::vector<uint8_t> bytes = w.serialize();
  auto file = GgufFile::parse(MappedFile::from_memory(bytes));
  if (!file.ok()) return file.status();
  return Tokenizer::from_gguf(**file);
}

}  // namespace kvq

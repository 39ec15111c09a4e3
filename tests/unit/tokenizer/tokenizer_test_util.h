// SPDX-License-Identifier: MIT
// Helpers shared by the tokenizer tests: fixture files and llama-tokenize id lists.
#pragma once

#include <gtest/gtest.h>

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

// A tokenizer from an in-memory GGUF. Tokenizer copies everything it keeps, so the bytes may
// die with this function.
inline StatusOr<Tokenizer> tokenizer_from_writer(const GgufWriter& w) {
  const std::vector<uint8_t> bytes = w.serialize();
  auto file = GgufFile::parse(MappedFile::from_memory(bytes));
  if (!file.ok()) return file.status();
  return Tokenizer::from_gguf(**file);
}

}  // namespace kvq

// SPDX-License-Identifier: MIT
// SentencePiece-BPE tokenizer for GGUF `tokenizer.ggml.model = "llama"`, reproducing llama.cpp's
// token ids exactly (llm_tokenizer_spm: score-ordered bigram merges over UTF-8 symbols, byte
// fallback <0xNN>, leading-space prefix, special-token partitioning).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/gguf.h"
#include "kvq/status.h"

namespace kvq {

// llama.cpp / SentencePiece token types as stored in tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,
  // unknown_token_id,add_bos_token,add_space_prefix}. Errors name the missing or bad key;
  // a tokenizer model other than "llama" is kUnimplemented.
  static StatusOr<Tokenizer> from_gguf(const GgufFile& file);

  // Text -> ids. add_bos prepends BOS; parse_special turns control-token text such as "<s>"
  // inside `text` into that token (llama-tokenize's default; --no-parse-special turns it off).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  // The bytes a token prints as (llama.cpp token_to_piece with special=false: control tokens
  // print nothing, byte tokens print their byte, U+2581 prints as a space).
  std::string token_to_piece(int32_t id) const;
  // Concatenated pieces.
  std::string decode(std::span<const int32_t> ids) const;

  int32_t n_vocab() const { return int32_t(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  // True for ids that end generation (EOS and other end-of-generation control tokens).
  bool is_eog(int32_t id) const { return id == eos_id_; }

 private:
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  int32_t bos_id_ = 1, eos_id_ = 2, unk_id_ = 0;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
  // Implementation detail owned by tokenizer.cc (special-token list, byte-token table, ...).
  std::vector<int32_t> special_ids_;
  int32_t byte_ids_[256] = {};
};

}  // namespace kvq

// SPDX-License-Identifier: MIT
// SentencePiece-BPE tokenizer for GGUF `tokenizer.ggml.model = "llama"`, reproducing llama.cpp's
// token ids exactly (llm_tokenizer_spm: score-ordered bigram merges over UTF-8 symbols, byte
// fallback <0xNN>, leading-space prefix, special-token partitioning).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
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
  // unknown_token_id,eot_token_id,eom_token_id,add_bos_token,add_space_prefix} and general.name
  // (Phi-3 strip rules). Errors name the missing or bad key. Stricter than llama.cpp: special
  // ids out of range (llama.cpp warns, keeps the default) and duplicate token texts (llama.cpp
  // aborts) are kInvalidArgument. A tokenizer model other than "llama" is kUnimplemented.
  static StatusOr<Tokenizer> from_gguf(const GgufFile& file);

  // Text -> ids, as llama_tokenize. add_bos prepends BOS (pass add_bos() for the model's
  // default); parse_special turns control/unknown-token text such as "<s>" inside `text` into
  // that token (llama-tokenize's default; --no-parse-special turns it off). USER_DEFINED tokens
  // are split out either way. Any bytes are accepted; what no token covers becomes <0xXX>.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  // The bytes a token prints as (llama.cpp token_to_piece with special=false: control, unknown
  // and unused tokens print nothing, byte tokens their byte, user-defined ones their text, and
  // U+2581 prints as a space). Ids out of range print nothing.
  std::string token_to_piece(int32_t id) const;
  // Concatenated pieces, as llama.cpp's llama_detokenize(remove_special=false,
  // unparse_special=false): with add_space_prefix, one leading space of the FIRST token's piece
  // is dropped, so decode(encode(t, false, ...)) == t while a leading BOS keeps the space.
  std::string decode(std::span<const int32_t> ids) const;

  int32_t n_vocab() const { return int32_t(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  // True for ids that end generation (EOS and other end-of-generation control tokens).
  bool is_eog(int32_t id) const {
    return id == eos_id_ || std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
  }

 private:
  // Heterogeneous lookup: the SPM merge loop probes with string_views into the input.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Token id for `text`, or -1.
  int32_t find_token(std::string_view text) const {
    auto it = token_to_id_.find(text);
    return it == token_to_id_.end() ? -1 : it->second;
  }
  // One raw-text fragment (already space-escaped) through llm_tokenizer_spm_session (spm.cc),
  // cut at barrier symbols into independent chunks.
  void spm_encode(std::string_view text, std::vector<int32_t>* out) const;
  void spm_encode_chunk(std::string_view text, std::vector<int32_t>* out) const;

  std::vector<std::string> tokens_;  // empty texts renamed "[EMPTY_<id>]" as llama.cpp does
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<uint32_t> attrs_;       // llama_token_attr bits (types plus auto-detected CONTROL)
  std::vector<std::string> pieces_;   // token_to_piece results, precomputed
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id_;
  int32_t bos_id_ = 1, eos_id_ = 2, unk_id_ = 0;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
  // CONTROL, USER_DEFINED and UNKNOWN tokens, longest text first (llama.cpp's
  // cache_special_tokens, same std::sort so equal lengths tie the same way).
  std::vector<int32_t> special_ids_;
  int32_t byte_ids_[256] = {};        // byte -> "<0xXX>" token (or its fallback)
  std::vector<int32_t> eog_ids_;      // end-of-generation tokens besides EOS
  // ASCII bytes that no token of two or more bytes contains (usually '\n'): as a symbol of its
  // own such a byte can never merge, so the merge loop runs on each side separately with the
  // same result and a small, cache-resident queue.
  bool barrier_[128] = {};
};

}  // namespace kvq

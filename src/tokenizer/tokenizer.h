// SPDX-License-Identifier: MIT
// GGUF vocabularies, reproducing llama.cpp's token ids exactly:
// - `tokenizer.ggml.model = "llama"`: SentencePiece BPE (llm_tokenizer_spm: score-ordered bigram
//   merges over UTF-8 symbols, byte fallback <0xNN>, leading-space prefix; spm.cc);
// - `tokenizer.ggml.model = "gpt2"`: byte-level BPE (llm_tokenizer_bpe: pre-tokenizer regexes by
//   tokenizer.ggml.pre, GPT-2's byte-to-unicode mapping, merges by tokenizer.ggml.merges rank;
//   bpe.cc, pre_tokenizer.cc);
// with special-token partitioning for both.
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
#include "tokenizer/pre_tokenizer.h"

namespace kvq {

// llama.cpp / SentencePiece token types as stored in tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,
  // unknown_token_id,eot_token_id,eom_token_id,add_bos_token,add_eos_token,add_space_prefix}
  // and general.name
  // (Phi-3 strip rules); for "gpt2" also tokenizer.ggml.{pre,merges} (scores optional, defaults
  // BOS = EOS = 11 and no BOS added, except for the Llama-3 pre-tokenizer, as llama.cpp).
  // Errors name the missing or bad key. Stricter than llama.cpp: special ids out of range
  // (llama.cpp warns, keeps the default), duplicate token texts (llama.cpp aborts) and merges
  // that are not two non-empty texts around a space are kInvalidArgument. A tokenizer model
  // other than "llama" or "gpt2", or an unknown tokenizer.ggml.pre, is kUnimplemented.
  static StatusOr<Tokenizer> from_gguf(const GgufFile& file);

  // Text -> ids, as llama_tokenize. add_bos prepends BOS (pass add_bos() for the model's
  // default); parse_special turns control/unknown-token text such as "<s>" inside `text` into
  // that token (llama-tokenize's default; --no-parse-special turns it off). USER_DEFINED tokens
  // are split out either way. Any bytes are accepted; what no token covers becomes <0xXX>
  // (SPM). Byte-level BPE replaces malformed UTF-8 by U+FFFD first, as llama.cpp does.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const;
  // The bytes a token prints as (llama.cpp token_to_piece with special=false: control, unknown
  // and unused tokens print nothing, byte tokens their byte, user-defined ones their text, and
  // U+2581 prints as a space; byte-level BPE maps a normal token's characters back to bytes
  // and byte tokens print nothing). Ids out of range print nothing.
  std::string token_to_piece(int32_t id) const;
  // Concatenated pieces, as llama.cpp's llama_detokenize(remove_special=false,
  // unparse_special=false): with add_space_prefix, one leading space of the FIRST token's piece
  // is dropped, so decode(encode(t, false, ...)) == t while a leading BOS keeps the space.
  // llama_detokenize's clean_up_tokenization_spaces pass (byte-level BPE) is not applied:
  // pieces are kept as generation prints them, so decode(encode(t)) == t for valid UTF-8.
  std::string decode(std::span<const int32_t> ids) const;

  // "llama" (SentencePiece) or "gpt2" (byte-level BPE), as in tokenizer.ggml.model.
  std::string_view model() const { return bpe_ ? "gpt2" : "llama"; }
  int32_t n_vocab() const { return int32_t(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  // tokenizer.ggml.add_eos_token (default false): llama_tokenize with add_special appends EOS.
  // encode() never does; a caller that wants llama.cpp's behaviour appends eos_id() itself.
  bool add_eos() const { return add_eos_; }
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
  // Byte-level BPE (bpe.cc): tokenizer.ggml.pre and .merges plus the BPE defaults, read before
  // the special ids and flags that may override those defaults.
  Status load_bpe(const GgufFile& file);
  // One raw-text fragment through llm_tokenizer_bpe_session::tokenize.
  void bpe_encode(std::string_view text, std::vector<int32_t>* out) const;
  // One word (already byte-encoded) through the rank-ordered merge loop.
  void bpe_encode_word(std::string_view word, std::vector<int32_t>* out) const;
  // llama_decode_text: a normal token's characters back to the bytes they stand for.
  static std::string bpe_piece(std::string_view text);

  std::vector<std::string> tokens_;  // empty texts renamed "[EMPTY_<id>]" as llama.cpp does
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<uint32_t> attrs_;       // llama_token_attr bits (types plus auto-detected CONTROL)
  std::vector<std::string> pieces_;   // token_to_piece results, precomputed
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id_;
  bool bpe_ = false;                  // tokenizer.ggml.model "gpt2"
  int32_t bos_id_ = 1, eos_id_ = 2, unk_id_ = 0;  // unk -1: none (byte-level BPE)
  bool add_bos_ = true;
  bool add_eos_ = false;
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
  // Byte-level BPE: merge "left right" -> rank (its index in tokenizer.ggml.merges; the first
  // of duplicates wins). Symbols never hold a space (bytes are mapped to printable characters
  // first), so the joined text names one pair.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> merge_ranks_;
  PreTokenizer pre_ = PreTokenizer::kDefault;
  bool ignore_merges_ = false;  // a word that is a token is taken whole (Llama-3)
};

}  // namespace kvq

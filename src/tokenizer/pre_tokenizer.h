// SPDX-License-Identifier: MIT
// Byte-level BPE pre-tokenizers: the word splits of llama.cpp's regexes for
// tokenizer.ggml.pre, written out by hand (llama.cpp's own unicode_regex_split_custom_* for
// gpt-2 and llama-bpe; the same rules for qwen2's and the default's std::regex patterns).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvq/status.h"

namespace kvq {

enum class PreTokenizer : uint8_t {
  // No or "default" tokenizer.ggml.pre: [\p{P}\$\+<=>\^~\|]+, then GPT-2's rules, then \p{N}+,
  // then [0-9][0-9][0-9], each splitting the pieces of the one before.
  kDefault,
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
  kGpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  // \s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // Llama-3's pattern with \p{N} (single digits) in place of \p{N}{1,3}.
  kQwen2,
};

// tokenizer.ggml.pre -> pre-tokenizer, with llama.cpp's aliases ("llama3", "llama-v3",
// "llama-bpe", "falcon3"; "qwen2", "deepseek-r1-qwen"; "gpt-2"; "default" or empty). Any other
// name is kUnimplemented, naming it.
StatusOr<PreTokenizer> pre_tokenizer_from_name(std::string_view name);

// Splits `cpts` (one raw-text fragment, decoded by decode_utf8) into words and appends each
// word's length in code points to `*words`; the lengths sum to cpts.size(). Pure function.
void pre_tokenize(PreTokenizer pre, std::span<const uint32_t> cpts, std::vector<size_t>* words);

}  // namespace kvq

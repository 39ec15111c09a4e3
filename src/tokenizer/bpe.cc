// SPDX-License-Identifier: MIT
// Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"), after llama.cpp's llm_tokenizer_bpe
// (Feb 2025): pre-tokenize into words, map each word's bytes to GPT-2's printable characters,
// then repeatedly merge the adjacent pair of lowest rank in tokenizer.ggml.merges.
#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/printable.h"
#include "tokenizer/pair_merge.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_class.h"

namespace kvq {
namespace {

// GPT-2's bytes_to_unicode: bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ')
// stand for themselves; the other 68 take code points 256, 257, ... in byte order, so that no
// token holds a space or a control character.
constexpr std::array<uint16_t, 256> make_byte_to_cpt() {
  std::array<uint16_t, 256> map{};
  uint16_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? uint16_t(b) : next++;
  }
  return map;
}
constexpr std::array<uint16_t, 256> kByteToCpt = make_byte_to_cpt();
constexpr uint32_t kCptLimit = 256 + 68;  // every mapped code point is below this

// The inverse: code point -> byte, or -1.
constexpr std::array<int16_t, kCptLimit> make_cpt_to_byte() {
  std::array<int16_t, kCptLimit> map{};
  for (int16_t& v : map) v = -1;
  for (int b = 0; b < 256; ++b) map[kByteToCpt[b]] = int16_t(b);
  return map;
}
constexpr std::array<int16_t, kCptLimit> kCptToByte = make_cpt_to_byte();

}  // namespace

Status Tokenizer::load_bpe(const GgufFile& file) {
  bpe_ = true;
  // llama.cpp's BPE defaults; the GGUF keys read after this override them.
  bos_id_ = 11, eos_id_ = 11, unk_id_ = -1;
  add_bos_ = false;
  add_space_prefix_ = false;
  std::string pre_name;
  if (file.find("tokenizer.ggml.pre")) {
    StatusOr<std::string> name = file.get_string("tokenizer.ggml.pre");
    if (!name.ok()) return name.status();
    pre_name = std::move(*name);
  }
  StatusOr<PreTokenizer> pre = pre_tokenizer_from_name(pre_name);
  if (!pre.ok()) return pre.status();
  pre_ = *pre;
  if (pre_ == PreTokenizer::kLlama3) {
    ignore_merges_ = true;
    add_bos_ = true;
  }

  StatusOr<std::vector<std::string_view>> merges = file.get_string_array("tokenizer.ggml.merges");
  if (!merges.ok()) return merges.status();
  if (merges->size() > size_t(INT32_MAX)) return invalid_argument("too many merges");
  merge_ranks_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string_view merge = (*merges)[i];
    // llama.cpp splits at the first space after the first byte; it would turn a merge without
    // one into an ("", "") pair that never applies, which hides a broken file.
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string_view::npos;
    if (space == std::string_view::npos || space + 1 == merge.size()) {
      return invalid_argument("tokenizer.ggml.merges[" + std::to_string(i) + "] = \"" +
                              printable(merge) +
                              "\" is not two non-empty texts separated by a space");
    }
    merge_ranks_.emplace(std::string(merge), int32_t(i));
  }
  return ok_status();
}

std::string Tokenizer::bpe_piece(std::string_view text) {
  std::string out;
  for (uint32_t cpt : decode_utf8(text)) {
    if (cpt < kCptLimit && kCptToByte[cpt] >= 0) {
      out.push_back(char(kCptToByte[cpt]));
      continue;
    }
    // llama_decode_text's marker for a character outside the byte map.
    std::string utf8;
    append_utf8(cpt, &utf8);
    out += "[UNK_BYTE_0x";
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : utf8) {
      out.push_back(kHex[uint8_t(c) >> 4]);
      out.push_back(kHex[uint8_t(c) & 15]);
    }
    out += std::string(text) + "]";
  }
  return out;
}

void Tokenizer::bpe_encode(std::string_view text, std::vector<int32_t>* out) const {
  const std::vector<uint32_t> cpts = decode_utf8(text);
  std::vector<size_t> words;
  pre_tokenize(pre_, cpts, &words);
  std::string utf8, word;
  size_t start = 0;
  for (size_t len : words) {
    // Malformed input was replaced by U+FFFD while decoding; re-encode, then map every byte.
    utf8.clear();
    for (size_t i = start; i < start + len; ++i) append_utf8(cpts[i], &utf8);
    start += len;
    word.clear();
    for (char c : utf8) append_utf8(kByteToCpt[uint8_t(c)], &word);
    bpe_encode_word(word, out);
  }
}

void Tokenizer::bpe_encode_word(std::string_view word, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    if (const int32_t id = find_token(word); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  std::vector<detail::MergeSymbol> symbols = detail::utf8_symbols(word);
  // llm_bigram_bpe: the pair must be a merge; lower ranks merge first.
  std::string key;
  detail::merge_pairs<int64_t>(
      symbols, [&](const detail::MergeSymbol& l, const detail::MergeSymbol& r) {
        key.assign(word.substr(l.offset, l.n));
        key.push_back(' ');
        key.append(word.substr(r.offset, r.n));
        auto it = merge_ranks_.find(key);
        return it == merge_ranks_.end() ? std::nullopt : std::optional<int64_t>(-it->second);
      });

  for (int64_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const std::string_view piece = word.substr(symbols[i].offset, symbols[i].n);
    if (const int32_t id = find_token(piece); id >= 0) {
      out->push_back(id);
      continue;
    }
    // llama.cpp then looks up each byte of the mapped text as a one-byte token and drops the
    // bytes that are not one (none are in a GPT-2-style vocabulary, whose tokens are mapped).
    for (char c : piece) {
      if (const int32_t id = find_token(std::string_view(&c, 1)); id >= 0) out->push_back(id);
    }
  }
}

}  // namespace kvq

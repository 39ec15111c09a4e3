// SPDX-License-Identifier: MIT
// llama.cpp's llm_tokenizer_spm_session: greedy highest-score bigram merges over UTF-8 symbols.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "tokenizer/pair_merge.h"
#include "tokenizer/tokenizer.h"

namespace kvq {

using detail::MergeSymbol;
using detail::utf8_len;

void Tokenizer::spm_encode(std::string_view text, std::vector<int32_t>* out) const {
  // Same UTF-8 split as the session, so chunks start on symbol boundaries.
  size_t start = 0;
  for (size_t offs = 0; offs < text.size();) {
    const uint8_t lead = uint8_t(text[offs]);
    const size_t n = std::min(utf8_len(lead), text.size() - offs);
    if (n == 1 && lead < 128 && barrier_[lead]) {
      if (offs > start) spm_encode_chunk(text.substr(start, offs - start), out);
      spm_encode_chunk(text.substr(offs, 1), out);
      start = offs + 1;
    }
    offs += n;
  }
  if (start < text.size()) spm_encode_chunk(text.substr(start), out);
}

void Tokenizer::spm_encode_chunk(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<MergeSymbol> symbols = detail::utf8_symbols(text);
  // llm_bigram_spm: the joined text must be a token; higher scores merge first.
  detail::merge_pairs<float>(symbols, [&](const MergeSymbol& l, const MergeSymbol& r) {
    const int32_t id = find_token(text.substr(l.offset, l.n + r.n));
    return id < 0 ? std::nullopt : std::optional<float>(scores_[id]);
  });

  // llama.cpp's resegment() also consults rev_merge, but that map only ever holds texts that
  // are tokens and is only read for texts that are not, so it never hits: a surviving symbol
  // is a token, or a single unmatched character that falls back to bytes.
  for (int64_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const MergeSymbol& s = symbols[i];
    const std::string_view piece = text.substr(s.offset, s.n);
    const int32_t id = find_token(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    for (char c : piece) out->push_back(byte_ids_[uint8_t(c)]);
  }
}

}  // namespace kvq

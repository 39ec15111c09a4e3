// SPDX-License-Identifier: MIT
// llama.cpp's llm_tokenizer_spm_session: greedy highest-score bigram merges over UTF-8 symbols.
#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kvq {
namespace {

struct Symbol {
  int64_t prev, next;
  size_t offset;  // into the fragment
  size_t n;       // bytes; 0 once merged into its left neighbour
};

struct Bigram {
  float score;
  int64_t left, right;
  size_t size;  // bytes of left + right when queued; a mismatch at pop time means stale
};

// std::priority_queue order of llm_bigram_spm::comparator: highest score first, then the
// leftmost pair. Entries equal under it are either identical or stale, so heap tie order
// cannot change the result.
bool lower_priority(const Bigram& l, const Bigram& r) {
  return l.score < r.score || (l.score == r.score && l.left > r.left);
}

// unicode_len_utf8: sequence length from the lead byte; stray continuation bytes count as 1.
size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

}  // namespace

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
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offs = 0; offs < text.size();) {
    const size_t n = std::min(utf8_len(uint8_t(text[offs])), text.size() - offs);
    const int64_t index = int64_t(symbols.size());
    symbols.push_back({index - 1, offs + n == text.size() ? -1 : index + 1, offs, n});
    offs += n;
  }

  std::vector<Bigram> queue;
  auto try_add_bigram = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    // A symbol's bytes are contiguous with its right neighbour's: merges only join neighbours.
    const size_t size = symbols[left].n + symbols[right].n;
    const int32_t id = find_token(text.substr(symbols[left].offset, size));
    if (id < 0) return;
    queue.push_back({scores_[id], left, right, size});
    std::push_heap(queue.begin(), queue.end(), lower_priority);
  };

  // Seed with every adjacent pair, heapified once (same pops as pushing one by one).
  queue.reserve(symbols.size());
  for (size_t i = 1; i < symbols.size(); ++i) {
    const size_t size = symbols[i - 1].n + symbols[i].n;
    const int32_t id = find_token(text.substr(symbols[i - 1].offset, size));
    if (id >= 0) queue.push_back({scores_[id], int64_t(i - 1), int64_t(i), size});
  }
  std::make_heap(queue.begin(), queue.end(), lower_priority);

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower_priority);
    const Bigram bigram = queue.back();
    queue.pop_back();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add_bigram(left.prev, bigram.left);
    try_add_bigram(bigram.left, left.next);
  }

  // llama.cpp's resegment() also consults rev_merge, but that map only ever holds texts that
  // are tokens and is only read for texts that are not, so it never hits: a surviving symbol
  // is a token, or a single unmatched character that falls back to bytes.
  for (int64_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const Symbol& s = symbols[i];
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

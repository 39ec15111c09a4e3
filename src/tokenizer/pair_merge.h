// SPDX-License-Identifier: MIT
// The greedy pair-merge loop that llama.cpp's SentencePiece and byte-level BPE sessions share:
// UTF-8 symbols in a linked list, the best adjacent pair merged first, stale queue entries
// skipped. Only the pair priority differs (SPM: token score; BPE: merge rank).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace kvq::detail {

struct MergeSymbol {
  int64_t prev, next;
  size_t offset;  // into the text
  size_t n;       // bytes; 0 once merged into its left neighbour
};

// unicode_len_utf8: sequence length from the lead byte; stray continuation bytes count as 1.
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// `text` cut into UTF-8 symbols (a truncated last sequence is cut short), linked in order.
inline std::vector<MergeSymbol> utf8_symbols(std::string_view text) {
  std::vector<MergeSymbol> symbols;
  symbols.reserve(text.size());
  for (size_t offs = 0; offs < text.size();) {
    const size_t n = std::min(utf8_len(uint8_t(text[offs])), text.size() - offs);
    const int64_t index = int64_t(symbols.size());
    symbols.push_back({index - 1, offs + n == text.size() ? -1 : index + 1, offs, n});
    offs += n;
  }
  return symbols;
}

// Merges adjacent symbols while some pair can merge: each time the pair whose
// `priority(left, right)` (two MergeSymbols; right's bytes follow left's) is highest, the
// leftmost among equals, as llama.cpp's std::priority_queue comparators order them.
// `priority` returns std::nullopt for a pair that cannot merge. Symbols only grow, so a queued pair whose joined
// size changed is stale; entries equal in priority and left index are identical or stale, so
// heap tie order cannot change the result.
template <typename Key, typename Priority>
void merge_pairs(std::vector<MergeSymbol>& symbols, Priority priority) {
  struct Pair {
    Key key;
    int64_t left, right;
    size_t size;
  };
  auto lower = [](const Pair& l, const Pair& r) {
    return l.key < r.key || (l.key == r.key && l.left > r.left);
  };
  std::vector<Pair> queue;
  auto push = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return false;
    const size_t size = symbols[left].n + symbols[right].n;
    const std::optional<Key> key = priority(symbols[left], symbols[right]);
    if (!key) return false;
    queue.push_back({*key, left, right, size});
    return true;
  };
  // Seed with every adjacent pair, heapified once (same pops as pushing one by one).
  queue.reserve(symbols.size());
  for (size_t i = 1; i < symbols.size(); ++i) push(int64_t(i - 1), int64_t(i));
  std::make_heap(queue.begin(), queue.end(), lower);
  auto push_heap = [&](int64_t left, int64_t right) {
    if (push(left, right)) std::push_heap(queue.begin(), queue.end(), lower);
  };
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower);
    const Pair pair = queue.back();
    queue.pop_back();
    MergeSymbol& left = symbols[pair.left];
    MergeSymbol& right = symbols[pair.right];
    if (left.n == 0 || right.n == 0 || left.n + right.n != pair.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = pair.left;
    push_heap(left.prev, pair.left);
    push_heap(pair.left, left.next);
  }
}

}  // namespace kvq::detail

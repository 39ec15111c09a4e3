// SPDX-License-Identifier: MIT
// Hand-written equivalents of llama.cpp's pre-tokenizer regexes (unicode.cpp, Feb 2025). Each
// rule runs on one piece at a time: the piece's end acts as the end of the input, so lookahead
// such as (?!\S) never sees past it, as with llama.cpp's per-offset regex iteration.
#include "tokenizer/pre_tokenizer.h"

#include "base/printable.h"
#include "tokenizer/unicode_class.h"

namespace kvq {
namespace {

// A piece of the code point sequence with class lookups that answer "nothing" past its end
// (llama.cpp's OUT_OF_RANGE / empty flags).
class Piece {
 public:
  Piece(std::span<const uint32_t> cpts, std::span<const CharClass> classes, size_t end)
      : cpts_(cpts), classes_(classes), end_(end) {}
  bool in(size_t pos) const { return pos < end_; }
  uint32_t cpt(size_t pos) const { return in(pos) ? cpts_[pos] : 0xFFFFFFFFu; }
  bool is(size_t pos, CharClass c) const { return in(pos) && classes_[pos] == c; }
  // [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls; nothing past the end.
  bool is_rest(size_t pos) const {
    return in(pos) && (classes_[pos] == CharClass::kOther || classes_[pos] == CharClass::kPunct);
  }

 private:
  std::span<const uint32_t> cpts_;
  std::span<const CharClass> classes_;
  size_t end_;
};

uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0. Llama-3's is
// case-insensitive; only ASCII letters can lower-case to the letters involved.
size_t contraction(const Piece& p, size_t pos, bool any_case) {
  if (p.cpt(pos) != '\'' || !p.in(pos + 1)) return 0;
  auto lower = [&](size_t i) { return any_case ? ascii_lower(p.cpt(i)) : p.cpt(i); };
  const uint32_t a = lower(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (!p.in(pos + 2)) return 0;
  const uint32_t b = lower(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// \s+(?!\S) then \s+ over a whitespace run of n at pos: all of it at the piece's end, all but
// its last character (which then leads the next word) when more than one is followed by text.
size_t whitespace_run(const Piece& p, size_t pos, size_t n) {
  return n > 1 && p.in(pos + n) ? n - 1 : n;
}

// unicode_regex_split_custom_gpt2.
void split_gpt2(const Piece& p, size_t begin, size_t end, std::vector<size_t>* words) {
  for (size_t pos = begin; pos < end;) {
    const size_t start = pos;
    if (size_t n = contraction(p, pos, false)) {
      words->push_back(n);
      pos += n;
      continue;
    }
    // ' ?' before a letter, number or [^\s\p{L}\p{N}] run joins that run.
    const size_t at = p.cpt(pos) == ' ' ? pos + 1 : pos;
    if (p.is(at, CharClass::kLetter) || p.is(at, CharClass::kNumber)) {
      const CharClass c = p.is(at, CharClass::kLetter) ? CharClass::kLetter : CharClass::kNumber;
      pos = at;
      while (p.is(pos, c)) ++pos;
    } else if (p.is_rest(at)) {
      pos = at;
      while (p.is_rest(pos)) ++pos;
    } else {
      size_t n = 0;
      while (p.is(pos + n, CharClass::kSpace)) ++n;
      pos += n > 0 ? whitespace_run(p, pos, n) : 1;  // 1: no rule matches, one character
    }
    words->push_back(pos - start);
  }
}

// unicode_regex_split_custom_llama3, with max_digits 3 (llama-bpe) or 1 (qwen2).
void split_llama3(const Piece& p, size_t begin, size_t end, size_t max_digits,
                  std::vector<size_t>* words) {
  for (size_t pos = begin; pos < end;) {
    const size_t start = pos;
    const uint32_t cpt = p.cpt(pos);
    if (size_t n = contraction(p, pos, true)) {
      pos += n;
    } else if (cpt != '\r' && cpt != '\n' && !p.is(pos, CharClass::kNumber) &&
               (p.is(pos, CharClass::kLetter) || p.is(pos + 1, CharClass::kLetter))) {
      // [^\r\n\p{L}\p{N}]?\p{L}+
      ++pos;
      while (p.is(pos, CharClass::kLetter)) ++pos;
    } else if (p.is(pos, CharClass::kNumber)) {
      while (p.is(pos, CharClass::kNumber) && pos - start < max_digits) ++pos;
    } else if (p.is_rest(cpt == ' ' ? pos + 1 : pos)) {
      // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
      pos += cpt == ' ';
      while (p.is_rest(pos)) ++pos;
      while (p.cpt(pos) == '\r' || p.cpt(pos) == '\n') ++pos;
    } else {
      size_t n = 0, last_newline_end = 0;
      for (; p.is(pos + n, CharClass::kSpace); ++n) {
        if (p.cpt(pos + n) == '\r' || p.cpt(pos + n) == '\n') last_newline_end = pos + n + 1;
      }
      if (last_newline_end > 0) {
        pos = last_newline_end;  // \s*[\r\n]+
      } else {
        pos += n > 0 ? whitespace_run(p, pos, n) : 1;
      }
    }
    words->push_back(pos - start);
  }
}

// A regex that only matches runs of one kind ([\p{P}...]+, \p{N}+) or [0-9]{3}: matches and the
// text between them both become pieces.
template <typename InRun>
void split_runs(size_t begin, size_t end, InRun in_run, std::vector<size_t>* words) {
  for (size_t pos = begin; pos < end;) {
    const size_t start = pos;
    const bool run = in_run(pos);
    while (pos < end && in_run(pos) == run) ++pos;
    words->push_back(pos - start);
  }
}

void split_three_digits(const Piece& p, size_t begin, size_t end, std::vector<size_t>* words) {
  auto digit = [&](size_t i) { return i < end && p.cpt(i) >= '0' && p.cpt(i) <= '9'; };
  size_t gap = begin;
  for (size_t pos = begin; pos < end;) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      if (pos > gap) words->push_back(pos - gap);
      words->push_back(3);
      pos += 3;
      gap = pos;
    } else {
      ++pos;
    }
  }
  if (end > gap) words->push_back(end - gap);
}

}  // namespace

StatusOr<PreTokenizer> pre_tokenizer_from_name(std::string_view name) {
  if (name.empty() || name == "default") return PreTokenizer::kDefault;
  if (name == "gpt-2") return PreTokenizer::kGpt2;
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3" || name == "falcon3") {
    return PreTokenizer::kLlama3;
  }
  if (name == "qwen2" || name == "deepseek-r1-qwen") return PreTokenizer::kQwen2;
  return unimplemented("tokenizer.ggml.pre = \"" + printable(name) +
                       "\" is not supported (supported: llama-bpe, qwen2, gpt-2, default)");
}

void pre_tokenize(PreTokenizer pre, std::span<const uint32_t> cpts, std::vector<size_t>* words) {
  std::vector<CharClass> classes(cpts.size());
  for (size_t i = 0; i < cpts.size(); ++i) classes[i] = char_class(cpts[i]);
  if (pre != PreTokenizer::kDefault) {
    const Piece p(cpts, classes, cpts.size());
    if (pre == PreTokenizer::kGpt2) {
      split_gpt2(p, 0, cpts.size(), words);
    } else {
      split_llama3(p, 0, cpts.size(), pre == PreTokenizer::kLlama3 ? 3 : 1, words);
    }
    return;
  }
  // The default runs four splitters in turn, each over every piece of the previous one.
  auto refine = [&](const std::vector<size_t>& pieces, auto&& split) {
    std::vector<size_t> out;
    size_t begin = 0;
    for (size_t n : pieces) {
      split(Piece(cpts, classes, begin + n), begin, begin + n, &out);
      begin += n;
    }
    return out;
  };
  std::vector<size_t> pieces = {cpts.size()};
  if (cpts.empty()) pieces.clear();
  pieces = refine(pieces, [&](const Piece&, size_t b, size_t e, std::vector<size_t>* out) {
    split_runs(b, e, [&](size_t i) {
      const uint32_t c = cpts[i];
      return classes[i] == CharClass::kPunct || c == '$' || c == '+' || c == '<' || c == '=' ||
             c == '>' || c == '^' || c == '~' || c == '|';
    }, out);
  });
  pieces = refine(pieces, [&](const Piece& p, size_t b, size_t e, std::vector<size_t>* out) {
    split_gpt2(p, b, e, out);
  });
  pieces = refine(pieces, [&](const Piece&, size_t b, size_t e, std::vector<size_t>* out) {
    split_runs(b, e, [&](size_t i) { return classes[i] == CharClass::kNumber; }, out);
  });
  pieces = refine(pieces, [&](const Piece& p, size_t b, size_t e, std::vector<size_t>* out) {
    split_three_digits(p, b, e, out);
  });
  words->insert(words->end(), pieces.begin(), pieces.end());
}

}  // namespace kvq

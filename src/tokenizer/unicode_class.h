// SPDX-License-Identifier: MIT
// Code points for the byte-level BPE pre-tokenizers: llama.cpp's lenient UTF-8 decoding and
// the character classes its split rules ask about (\p{L}, \p{N}, \p{P}, \s).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvq {

// One class per code point. kSpace is the Unicode White_Space list and wins over the general
// category (e.g. U+00A0 is Zs but counts as \s); kOther is everything else (marks, symbols,
// controls, unassigned), which \p{L}/\p{N}/\p{P} do not match.
enum class CharClass : uint8_t { kOther, kLetter, kNumber, kPunct, kSpace };

// The table comes from Python's unicodedata (Unicode 14.0 on Debian 12), the newest UCD on the
// build machines; llama.cpp's (Feb 2025) is Unicode 15.1, so letters and digits first assigned
// in 15.0/15.1 (CJK Extensions H and I, Kawi, Nag Mundari, ...) are kOther here and may split
// differently from llama.cpp. Every fixture text predates them.
//
// Class of `cpt`; code points past U+10FFFF are kOther. Thread-safe (constant tables).
CharClass char_class(uint32_t cpt);

// UTF-8 -> code points as llama.cpp's unicode_cpts_from_utf8 does: a malformed sequence (bad
// lead byte, missing continuation byte, truncated at the end) becomes U+FFFD and consumes one
// byte; overlong forms and surrogates decode as they are. Sequences past U+10FFFF, on which
// llama.cpp throws while re-encoding, become U+FFFD too (and consume their four bytes).
std::vector<uint32_t> decode_utf8(std::string_view text);

// Appends the UTF-8 bytes of `cpt` (at most U+10FFFF, which decode_utf8 guarantees).
void append_utf8(uint32_t cpt, std::string* out);

}  // namespace kvq

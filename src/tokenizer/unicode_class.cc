// SPDX-License-Identifier: MIT
// Code point classes from a generated range table, and llama.cpp-compatible UTF-8 decoding.
#include "tokenizer/unicode_class.h"

#include <algorithm>
#include <iterator>

#include "base/check.h"

namespace kvq {
namespace {

struct ClassRange {
  uint32_t first;
  CharClass cls;
};

constexpr ClassRange kRanges[] = {
#include "tokenizer/generated/unicode_classes.inc"
};

constexpr uint32_t kReplacement = 0xFFFD;

}  // namespace

CharClass char_class(uint32_t cpt) {
  if (cpt > 0x10FFFF) return CharClass::kOther;
  // Last range starting at or before cpt; the table starts at 0.
  const ClassRange* it = std::upper_bound(
      std::begin(kRanges), std::end(kRanges), cpt,
      [](uint32_t c, const ClassRange& r) { return c < r.first; });
  return std::prev(it)->cls;
}

std::vector<uint32_t> decode_utf8(std::string_view text) {
  std::vector<uint32_t> cpts;
  cpts.reserve(text.size());
  const size_t n = text.size();
  auto cont = [&](size_t i) { return i < n && (uint8_t(text[i]) & 0xC0) == 0x80; };
  for (size_t i = 0; i < n;) {
    const uint8_t lead = uint8_t(text[i]);
    uint32_t cpt = kReplacement;
    size_t len = 1;
    if (lead < 0x80) {
      cpt = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      if (cont(i + 1)) cpt = (uint32_t(lead & 0x1F) << 6) | (uint8_t(text[i + 1]) & 0x3F), len = 2;
    } else if ((lead & 0xF0) == 0xE0) {
      if (cont(i + 1) && cont(i + 2)) {
        cpt = (uint32_t(lead & 0x0F) << 12) | (uint32_t(uint8_t(text[i + 1]) & 0x3F) << 6) |
              (uint8_t(text[i + 2]) & 0x3F);
        len = 3;
      }
    } else if ((lead & 0xF8) == 0xF0) {
      if (cont(i + 1) && cont(i + 2) && cont(i + 3)) {
        cpt = (uint32_t(lead & 0x07) << 18) | (uint32_t(uint8_t(text[i + 1]) & 0x3F) << 12) |
              (uint32_t(uint8_t(text[i + 2]) & 0x3F) << 6) | (uint8_t(text[i + 3]) & 0x3F);
        len = 4;
        if (cpt > 0x10FFFF) cpt = kReplacement;
      }
    }
    cpts.push_back(cpt);
    i += len;
  }
  return cpts;
}

void append_utf8(uint32_t cpt, std::string* out) {
  KVQ_DCHECK(cpt <= 0x10FFFF, "code point %x out of range", unsigned(cpt));
  if (cpt < 0x80) {
    out->push_back(char(cpt));
  } else if (cpt < 0x800) {
    out->push_back(char(0xC0 | (cpt >> 6)));
    out->push_back(char(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out->push_back(char(0xE0 | (cpt >> 12)));
    out->push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cpt >> 18)));
    out->push_back(char(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cpt & 0x3F)));
  }
}

}  // namespace kvq

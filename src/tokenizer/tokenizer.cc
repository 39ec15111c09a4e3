// SPDX-License-Identifier: MIT
// Vocabulary loading, special-token partitioning and detokenization, after llama.cpp's
// llama_vocab (src/llama-vocab.cpp, Feb 2025). The merge loops are in spm.cc and bpe.cc.
#include "tokenizer/tokenizer.h"

#include "base/printable.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

namespace kvq {
namespace {

// llama_token_attr bits.
constexpr uint32_t kAttrUnknown = 1u << 0, kAttrUnused = 1u << 1, kAttrNormal = 1u << 2,
                   kAttrControl = 1u << 3, kAttrUserDefined = 1u << 4, kAttrByte = 1u << 5,
                   kAttrLstrip = 1u << 7, kAttrRstrip = 1u << 8;

uint32_t attr_of_type(int32_t type) {
  switch (TokenType(type)) {
    case TokenType::kUnknown: return kAttrUnknown;
    case TokenType::kUnused: return kAttrUnused;
    case TokenType::kNormal: return kAttrNormal;
    case TokenType::kControl: return kAttrControl;
    case TokenType::kUserDefined: return kAttrUserDefined;
    case TokenType::kByte: return kAttrByte;
    default: return 0;  // kUndefined and anything unknown
  }
}

// Texts llama.cpp promotes to CONTROL when it finds them (EOT/EOM/FIM auto-detection), so they
// are split out of the input and print nothing even when the converter typed them NORMAL.
constexpr std::string_view kControlLooking[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>",
    "<｜end▁of▁sentence｜>", "<|eom_id|>", "<|fim_prefix|>", "<fim-prefix>",
    "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|fim_suffix|>", "<fim-suffix>", "<｜fim▁hole｜>",
    "<SUF>", "▁<SUF>", "<|fim_middle|>", "<fim-middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
    "<|fim_pad|>", "<fim-pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
    "<REPO>", "<|file_sep|>",
};
// Of those, the ones that end generation (llama.cpp's special_eog_ids text list).
constexpr std::string_view kEndOfGeneration[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>",
};

constexpr std::string_view kSpaceEscape = "\xe2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

bool is_c_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Optional special-token id: absent keeps `*id` (a valid id, or -1 for none); present must
// name a token.
Status read_token_id(const GgufFile& f, std::string_view key, int32_t n_vocab, int32_t* id) {
  if (!f.find(key)) {
    if (*id >= -1 && *id < n_vocab) return ok_status();
    return invalid_argument(std::string(key) + " is absent and its default id " +
                            std::to_string(*id) + " is out of range for a vocabulary of " +
                            std::to_string(n_vocab) + " tokens");
  }
  StatusOr<uint64_t> v = f.get_u64(key);
  if (!v.ok()) return v.status();
  if (*v >= uint64_t(n_vocab)) {
    return invalid_argument(std::string(key) + " = " + std::to_string(*v) +
                            " is out of range for a vocabulary of " + std::to_string(n_vocab) +
                            " tokens");
  }
  *id = int32_t(*v);
  return ok_status();
}

Status read_optional_bool(const GgufFile& f, std::string_view key, bool* value) {
  if (!f.find(key)) return ok_status();
  StatusOr<bool> v = f.get_bool(key);
  if (!v.ok()) return v.status();
  *value = *v;
  return ok_status();
}

}  // namespace

StatusOr<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  StatusOr<std::string> model = file.get_string("tokenizer.ggml.model");
  if (!model.ok()) return model.status().with_context("tokenizer");
  if (*model != "llama" && *model != "gpt2") {
    return unimplemented("tokenizer model \"" + printable(*model) +
                         "\" is not supported (only \"llama\" SentencePiece and \"gpt2\" "
                         "byte-level BPE vocabularies are)");
  }
  const bool bpe = *model == "gpt2";
  StatusOr<std::vector<std::string_view>> texts = file.get_string_array("tokenizer.ggml.tokens");
  if (!texts.ok()) return texts.status().with_context("tokenizer");
  const size_t n = texts->size();
  // Byte-level BPE ranks merges, not tokens: scores are optional there.
  StatusOr<std::vector<float>> scores = std::vector<float>(n, 0.0f);
  if (!bpe || file.find("tokenizer.ggml.scores")) {
    scores = file.get_f32_array("tokenizer.ggml.scores");
  }
  if (!scores.ok()) return scores.status().with_context("tokenizer");
  if (n == 0) return invalid_argument("tokenizer: tokenizer.ggml.tokens is empty");
  if (n > size_t(INT32_MAX)) return invalid_argument("tokenizer: too many tokens");
  if (scores->size() != n) {
    return invalid_argument("tokenizer: tokenizer.ggml.scores has " +
                            std::to_string(scores->size()) + " entries for " +
                            std::to_string(n) + " tokens");
  }
  // Without token types every token is NORMAL, as in llama.cpp.
  std::vector<int32_t> types(n, int32_t(TokenType::kNormal));
  if (file.find("tokenizer.ggml.token_type")) {
    StatusOr<std::vector<int32_t>> t = file.get_i32_array("tokenizer.ggml.token_type");
    if (!t.ok()) return t.status().with_context("tokenizer");
    if (t->size() != n) {
      return invalid_argument("tokenizer: tokenizer.ggml.token_type has " +
                              std::to_string(t->size()) + " entries for " + std::to_string(n) +
                              " tokens");
    }
    types = std::move(*t);
  }

  Tokenizer tok;
  const int32_t n_vocab = int32_t(n);
  tok.tokens_.reserve(n);
  tok.types_.reserve(n);
  tok.attrs_.reserve(n);
  tok.token_to_id_.reserve(n);
  tok.scores_ = std::move(*scores);
  for (int32_t i = 0; i < n_vocab; ++i) {
    std::string text((*texts)[i]);
    if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";
    // llama.cpp asserts (aborts) on duplicate texts; report it instead.
    auto [it, inserted] = tok.token_to_id_.emplace(text, i);
    if (!inserted) {
      return invalid_argument("tokenizer: tokens " + std::to_string(it->second) + " and " +
                              std::to_string(i) + " have the same text \"" + text + "\"");
    }
    const uint32_t attr = attr_of_type(types[i]);
    if ((attr & kAttrByte) && !bpe) {
      // token_to_byte reads the two characters after "<0x".
      if (text.size() < 5) {
        return invalid_argument("tokenizer: byte token " + std::to_string(i) + " \"" + text +
                                "\" is not of the form <0xXX>");
      }
    }
    tok.types_.push_back(attr == 0 ? TokenType::kUndefined : TokenType(types[i]));
    tok.attrs_.push_back(attr);
    tok.tokens_.push_back(std::move(text));
  }

  if (bpe) KVQ_RETURN_IF_ERROR(tok.load_bpe(file).with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(read_token_id(file, "tokenizer.ggml.bos_token_id", n_vocab, &tok.bos_id_)
                          .with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(read_token_id(file, "tokenizer.ggml.eos_token_id", n_vocab, &tok.eos_id_)
                          .with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(
      read_token_id(file, "tokenizer.ggml.unknown_token_id", n_vocab, &tok.unk_id_)
          .with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(read_optional_bool(file, "tokenizer.ggml.add_bos_token", &tok.add_bos_)
                          .with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(read_optional_bool(file, "tokenizer.ggml.add_eos_token", &tok.add_eos_)
                          .with_context("tokenizer"));
  KVQ_RETURN_IF_ERROR(
      read_optional_bool(file, "tokenizer.ggml.add_space_prefix", &tok.add_space_prefix_)
          .with_context("tokenizer"));
  for (std::string_view key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (!file.find(key)) continue;
    int32_t id = -1;
    KVQ_RETURN_IF_ERROR(read_token_id(file, key, n_vocab, &id).with_context("tokenizer"));
    tok.eog_ids_.push_back(id);
  }

  std::fill(std::begin(tok.barrier_), std::end(tok.barrier_), !bpe);
  for (const std::string& text : tok.tokens_) {
    if (bpe || text.size() < 2) continue;
    for (char c : text) {
      if (uint8_t(c) < 128) tok.barrier_[uint8_t(c)] = false;
    }
  }

  // Auto-detected control and end-of-generation tokens.
  for (std::string_view text : kControlLooking) {
    const int32_t id = tok.find_token(text);
    if (id >= 0) tok.attrs_[id] |= kAttrControl;
  }
  for (std::string_view text : kEndOfGeneration) {
    const int32_t id = tok.find_token(text);
    if (id >= 0 && id != tok.eos_id_) tok.eog_ids_.push_back(id);
  }

  for (int32_t i = 0; i < n_vocab; ++i) {
    if (tok.attrs_[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) {
      tok.special_ids_.push_back(i);
    }
  }
  // Deliberately std::sort with llama.cpp's comparator: equal lengths end up in the same
  // (unspecified but deterministic) order as in a libstdc++ build of llama.cpp.
  std::sort(tok.special_ids_.begin(), tok.special_ids_.end(), [&](int32_t a, int32_t b) {
    return tok.tokens_[a].size() > tok.tokens_[b].size();
  });

  // Phi-3 is the one SPM vocabulary llama.cpp gives strip attributes (by general.name).
  if (StatusOr<std::string> name = file.get_string("general.name"); name.ok()) {
    std::string lower = *name;
    for (char& c : lower) c = char(std::tolower(uint8_t(c)));
    if (lower.find("phi-3") != std::string::npos || lower.find("phi3") != std::string::npos) {
      for (int32_t id : tok.special_ids_) tok.attrs_[id] |= kAttrRstrip;
      if (int32_t id = tok.find_token("</s>"); id >= 0) tok.attrs_[id] |= kAttrRstrip;
      for (std::string_view t : {"<unk>", "<s>", "<|endoftext|>"}) {
        if (int32_t id = tok.find_token(t); id >= 0) tok.attrs_[id] &= ~kAttrRstrip;
      }
    }
  }

  // byte_to_token: "<0xXX>", else the raw byte as a one-character token (for 0x00 llama.cpp
  // looks up "" through a C string, which never exists), else unk where llama.cpp would throw.
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    const char raw = char(b);
    int32_t id = tok.find_token(std::string_view(name, 6));
    if (id < 0 && b != 0) id = tok.find_token(std::string_view(&raw, 1));
    tok.byte_ids_[b] = id >= 0 ? id : tok.unk_id_;
  }

  // token_to_piece(special=false).
  tok.pieces_.resize(n);
  for (int32_t i = 0; i < n_vocab; ++i) {
    const uint32_t attr = tok.attrs_[i];
    const std::string& text = tok.tokens_[i];
    std::string& piece = tok.pieces_[i];
    if (attr & (kAttrControl | kAttrUnknown)) continue;
    if (attr & kAttrUserDefined) {
      piece = text;
    } else if (bpe) {
      // llama.cpp prints nothing for byte-level BPE's unused, byte and undefined tokens.
      if (attr & kAttrNormal) piece = bpe_piece(text);
    } else if (attr & kAttrNormal) {
      for (size_t p = 0; p < text.size();) {
        if (text.compare(p, kSpaceEscape.size(), kSpaceEscape) == 0) {
          piece += ' ';
          p += kSpaceEscape.size();
        } else {
          piece += text[p++];
        }
      }
    } else if (attr & kAttrByte) {
      // strtol(text.substr(3, 2), 16) on the digits that parse.
      int value = 0;
      for (size_t p = 3; p < 5 && hex_value(text[p]) >= 0; ++p) {
        value = value * 16 + hex_value(text[p]);
      }
      piece = std::string(1, char(value));
    }
  }
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  // tokenizer_st_partition: for each special token (longest first), split every raw-text
  // fragment at its non-overlapping occurrences, left to right.
  struct Fragment {
    int32_t token;  // -1: raw text [offset, offset + length)
    size_t offset, length;
  };
  std::vector<Fragment> fragments, next;
  if (!text.empty()) fragments.push_back({-1, 0, text.size()});
  for (int32_t id : special_ids_) {
    const uint32_t attr = attrs_[id];
    if (!parse_special && (attr & (kAttrControl | kAttrUnknown))) continue;
    const std::string& special = tokens_[id];
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t base = f.offset, length = f.length;
      while (length > 0) {
        const size_t match = text.substr(0, base + length).find(special, base);
        if (match == std::string_view::npos) {
          next.push_back({-1, base, length});
          break;
        }
        size_t left = match - base;
        if (attr & kAttrLstrip) {
          while (left > 0 && is_c_space(text[base + left - 1])) --left;
        }
        if (left > 0) next.push_back({-1, base, left});
        next.push_back({id, 0, 0});
        size_t right_offset = match + special.size();
        size_t right = base + length - right_offset;
        if (attr & kAttrRstrip) {
          while (right > 0 && is_c_space(text[right_offset])) ++right_offset, --right;
        }
        base = right_offset;
        length = right;
      }
    }
    fragments.swap(next);
  }

  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) out.push_back(bos_id_);
  bool prev_special = true;  // a leading space goes before the first fragment too
  std::string escaped;
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    if (bpe_) {
      // llama.cpp adds no space prefix in byte-level BPE (the pre-tokenizer keeps spaces).
      bpe_encode(text.substr(f.offset, f.length), &out);
      continue;
    }
    escaped.clear();
    if (add_space_prefix_ && prev_special) escaped = kSpaceEscape;
    for (char c : text.substr(f.offset, f.length)) {
      if (c == ' ') {
        escaped += kSpaceEscape;
      } else {
        escaped += c;
      }
    }
    spm_encode(escaped, &out);
    prev_special = false;
  }
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  return pieces_[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  bool remove_space = add_space_prefix_;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab()) {
      remove_space = false;
      continue;
    }
    std::string_view piece = pieces_[id];
    if (remove_space && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    remove_space = false;
    out += piece;
  }
  return out;
}

}  // namespace kvq

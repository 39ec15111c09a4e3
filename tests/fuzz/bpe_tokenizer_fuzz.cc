// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes through the byte-level BPE encoder of the Llama-3, Qwen2 and
// GPT-2 vocabularies (the first byte picks one). Every id must be in range, and text that is
// valid UTF-8 must decode back byte for byte when special tokens are not parsed.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_class.h"

namespace {

const kvq::Tokenizer& tokenizer(int which) {
  static const char* const kNames[] = {"llama-bpe", "qwen2", "gpt-2"};
  static std::unique_ptr<kvq::Tokenizer> toks[3];
  if (!toks[which]) {
    toks[which] = kvq::load_tokenizer_or_abort(std::string("fixtures/bpe/vocab/ggml-vocab-") +
                                               kNames[which] + ".gguf");
  }
  return *toks[which];
}

// Whether decoding to code points and back gives the same bytes (no malformed or overlong
// sequences, nothing past U+10FFFF).
bool is_plain_utf8(std::string_view text) {
  std::string again;
  for (uint32_t cpt : kvq::decode_utf8(text)) kvq::append_utf8(cpt, &again);
  return again == text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const kvq::Tokenizer& tok = tokenizer(data[0] % 3);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.n_vocab()) std::abort();
    }
    const std::string decoded = tok.decode(ids);
    if (!special && is_plain_utf8(text) && decoded != text) std::abort();
  }
  return 0;
}

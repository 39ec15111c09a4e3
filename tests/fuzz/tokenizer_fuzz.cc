// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes through encode/decode of the stories260K vocabulary, with
// and without special-token parsing. Every id must be in range and decode must not crash.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "fuzz_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace {

const kvq::Tokenizer& tokenizer() {
  static const std::unique_ptr<kvq::Tokenizer> tok =
      kvq::load_tokenizer_or_abort("models/stories260K.gguf");
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kvq::Tokenizer& tok = tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok.n_vocab()) std::abort();
    }
    const std::string decoded = tok.decode(ids);
    // Every input byte comes back as at most its own bytes or a 3-byte "▁"; a BOS adds nothing
    // but the kept space prefix.
    if (decoded.size() > 3 * size + 1) std::abort();
    for (int32_t id : ids) (void)tok.token_to_piece(id);
  }
  return 0;
}

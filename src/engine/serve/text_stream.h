// SPDX-License-Identifier: MIT
// The text a sequence streams out: token pieces are appended and released only when no stop
// string could still begin in them and they end on a whole UTF-8 character, so a client never
// sees part of a stop string, nor half a character split across two tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvq {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop = {});

  // Appends a token's bytes and returns the text now safe to emit. When a stop string
  // appears, *stopped is set, the returned text ends just before it and the stream is done.
  std::string push(std::string_view piece, bool* stopped);
  // What is still held back, at the end of the sequence (an incomplete UTF-8 tail as is).
  std::string finish();

 private:
  std::vector<std::string> stop_;
  std::string pending_;  // generated, not yet emitted
};

// Bytes at the end of s that start a UTF-8 character not yet complete (0 to 3).
size_t incomplete_utf8_tail(std::string_view s);
// True when s is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view s);

}  // namespace kvq

// SPDX-License-Identifier: MIT
// OpenAI response bodies: completions and chat completions, whole and as stream chunks.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvq::serve {

struct ResponseHead {
  bool chat = false;
  std::string id;     // "cmpl-N" / "chatcmpl-N"
  int64_t created = 0;
  std::string model;
};

struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
  nlohmann::json to_json() const {
    return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  }
};

// The whole response of a non-streaming request.
nlohmann::json completion_body(const ResponseHead& h, const std::string& text, const std::string& finish_reason,
                               const Usage& usage);
// One stream chunk: text (chat: delta.content; first: delta.role too), finish_reason when
// not empty (else null).
nlohmann::json completion_chunk(const ResponseHead& h, const std::string& text, const std::string& finish_reason,
                                bool first);
// The final usage chunk of stream_options.include_usage: no choices.
nlohmann::json usage_chunk(const ResponseHead& h, const Usage& usage);
// JSON text with invalid UTF-8 (a token that ends mid-character at the very end) replaced.
std::string dump(const nlohmann::json& j);

}  // namespace kvq::serve

// SPDX-License-Identifier: MIT
// The body of POST /v1/completions and /v1/chat/completions, parsed and validated before any
// work starts. Unknown fields are refused (400 naming them), as OpenAI's API does, so that a
// misspelt parameter (max_token) is not silently ignored; fields OpenAI defines that kvq does
// not implement are accepted only at their neutral value (n = 1, penalties 0, ...). Three
// llama-server fields are accepted too: id_slot, cache_prompt and ignore_eos.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/serve/chat_template.h"
#include "serve/api_error.h"

namespace kvq::serve {

struct CompletionParams {
  bool chat = false;
  std::string prompt;                 // completions
  std::vector<ChatMessage> messages;  // chat
  std::optional<int> max_tokens;      // absent: the server's -n, clipped to the context
  float temperature = 1.0f;           // OpenAI's default; 0: greedy
  float top_p = 1.0f;
  int top_k = 0;                      // 0: off (an extension, as llama-server has it)
  std::optional<uint64_t> seed;       // absent: a fresh seed per request
  std::vector<std::string> stop;      // at most 4, each non-empty
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  int id_slot = -1;                   // llama-server's: the slot to run in (-1: any)
  bool cache_prompt = true;           // llama-server's: reuse the slot's cached prefix
  bool ignore_eos = false;            // llama-server's: generate past end-of-generation tokens
};

// body: the raw request body. chat selects the endpoint's schema.
std::variant<CompletionParams, ApiError> parse_completion_request(const std::string& body, bool chat);

}  // namespace kvq::serve

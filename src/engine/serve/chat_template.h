// SPDX-License-Identifier: MIT
// Chat templates: the model's tokenizer.chat_template (a Jinja string) is recognised by the
// markers of the common formats and rendered here in C++; no Jinja interpreter. A template
// that is none of them (or none at all) is reported, so the server can say so.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kvq/status.h"

namespace kvq {

enum class ChatFormat { kNone, kLlama2, kLlama3, kChatML, kMistral };
const char* chat_format_name(ChatFormat f);

// By markers: <|start_header_id|> → Llama-3; <|im_start|> → ChatML; [INST] with <<SYS>> →
// Llama-2; [INST] without it → Mistral; anything else (or "") → kNone.
ChatFormat detect_chat_format(std::string_view jinja);

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

// The prompt text, ending with the assistant's turn opened (add_generation_prompt). The BOS
// is not written: the tokenizer adds it. Special tokens in it (<|eot_id|>, <|im_end|>) are
// meant to be encoded as such (parse_special). Errors: kInvalidArgument for kNone, a role
// other than system/user/assistant, or an order the format cannot express (Llama-2 and
// Mistral: a system message after the first one).
StatusOr<std::string> render_chat(ChatFormat f, const std::vector<ChatMessage>& messages);

}  // namespace kvq

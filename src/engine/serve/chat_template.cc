// SPDX-License-Identifier: MIT
#include "engine/serve/chat_template.h"

namespace kvq {

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kLlama3: return "llama3";
    case ChatFormat::kChatML: return "chatml";
    case ChatFormat::kMistral: return "mistral";
    case ChatFormat::kNone: break;
  }
  return "none";
}

ChatFormat detect_chat_format(std::string_view t) {
  auto has = [&](std::string_view m) { return t.find(m) != std::string_view::npos; };
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|im_start|>")) return ChatFormat::kChatML;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::kLlama2 : ChatFormat::kMistral;
  return ChatFormat::kNone;
}

namespace {

// Templates strip the content of surrounding whitespace (Llama-2/3's | trim).
std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

Status check_roles(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return invalid_argument("messages is empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      return invalid_argument("messages[" + std::to_string(i) + "].role is '" + r +
                              "'; expected system, user or assistant");
    }
  }
  return ok_status();
}

// Llama-2 and Mistral: [INST] user [/INST] assistant</s>, with the system prompt folded into
// the first user turn (Llama-2 in a <<SYS>> block, Mistral before it).
StatusOr<std::string> render_inst(const std::vector<ChatMessage>& messages, bool llama2) {
  std::string system, out;
  size_t i = 0;
  if (messages[0].role == "system") {
    system = trim(messages[0].content);
    i = 1;
  }
  bool first_user = true;
  for (; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      return invalid_argument("messages[" + std::to_string(i) + "]: a system message must come first in the " +
                              (llama2 ? "Llama-2" : "Mistral") + " format");
    }
    if (m.role == "user") {
      if (!first_user) out += llama2 ? "<s>" : "";
      std::string content = trim(m.content);
      if (first_user && !system.empty()) {
        content = llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
      }
      out += llama2 ? "[INST] " + content + " [/INST]" : "[INST] " + content + "[/INST]";
      first_user = false;
    } else {
      // Appended piece by piece: g++ 12 warns (-Wrestrict, falsely) on "literal" + string&&.
      out += ' ';
      out += trim(m.content);
      out += "</s>";
    }
  }
  return out;
}

}  // namespace

StatusOr<std::string> render_chat(ChatFormat f, const std::vector<ChatMessage>& messages) {
  if (f == ChatFormat::kNone) return invalid_argument("no chat template");
  KVQ_RETURN_IF_ERROR(check_roles(messages));
  std::string out;
  switch (f) {
    case ChatFormat::kLlama3:
      for (const auto& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
      }
      return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::kChatML:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatFormat::kLlama2: return render_inst(messages, true);
    case ChatFormat::kMistral: return render_inst(messages, false);
    case ChatFormat::kNone: break;
  }
  return invalid_argument("no chat template");
}

}  // namespace kvq

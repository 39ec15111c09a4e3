// SPDX-License-Identifier: MIT
#include "serve/api_response.h"

namespace kvq::serve {

using nlohmann::json;

namespace {
json head(const ResponseHead& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}
json reason(const std::string& r) { return r.empty() ? json(nullptr) : json(r); }
}  // namespace

json completion_body(const ResponseHead& h, const std::string& text, const std::string& finish_reason,
                     const Usage& usage) {
  json j = head(h, h.chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", reason(finish_reason)}};
  if (h.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  j["choices"] = json::array({choice});
  j["usage"] = usage.to_json();
  return j;
}

json completion_chunk(const ResponseHead& h, const std::string& text, const std::string& finish_reason, bool first) {
  json j = head(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", reason(finish_reason)}};
  if (h.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk(const ResponseHead& h, const Usage& usage) {
  json j = head(h, h.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage.to_json();
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace kvq::serve

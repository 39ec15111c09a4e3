// SPDX-License-Identifier: MIT
#include "serve/api_request.h"

#include <cmath>
#include <set>
#include <string>
#include <string_view>

#include "engine/serve/text_stream.h"

namespace kvq::serve {

namespace {

using nlohmann::json;

constexpr int kMaxStop = 4;

// 'name', built by appending: GCC 12 warns falsely (-Wrestrict, its bug 105329) when a
// message starts with "'" + std::string.
std::string in_quotes(std::string_view name) {
  std::string s(1, '\'');
  s += name;
  s += '\'';
  return s;
}

ApiError type_error(const std::string& field, const char* expected) {
  return bad_request("invalid_type", in_quotes(field) + " must be " + expected);
}

// A number in [lo, hi] (null: absent).
std::optional<ApiError> get_float(const json& j, const char* key, double lo, double hi, float* out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_number()) return type_error(key, "a number");
  const double v = j[key].get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return bad_request("invalid_value", in_quotes(key) + " must be between " + json(lo).dump() + " and " +
                                            json(hi).dump() + ", got " + j[key].dump());
  }
  *out = float(v);
  return std::nullopt;
}

std::optional<ApiError> get_int(const json& j, const char* key, int64_t lo, int64_t hi, std::optional<int64_t>* out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& v = j[key];
  if (!v.is_number_integer()) return type_error(key, "an integer");
  const bool in_range = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= uint64_t(hi) && int64_t(v.get<uint64_t>()) >= lo
                            : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range) {
    return bad_request("invalid_value", in_quotes(key) + " must be between " + std::to_string(lo) + " and " +
                                            std::to_string(hi) + ", got " + v.dump());
  }
  *out = v.is_number_unsigned() ? int64_t(v.get<uint64_t>()) : v.get<int64_t>();
  return std::nullopt;
}

// A boolean (null: absent).
std::optional<ApiError> get_bool(const json& j, const char* key, bool* out) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_boolean()) return type_error(key, "a boolean");
  *out = j[key].get<bool>();
  return std::nullopt;
}

// Fields OpenAI defines that kvq accepts only at the value that changes nothing.
std::optional<ApiError> check_neutral(const json& j) {
  auto must = [&](const char* key, const json& neutral) -> std::optional<ApiError> {
    if (!j.contains(key) || j[key].is_null() || j[key] == neutral) return std::nullopt;
    return bad_request("unsupported_parameter", in_quotes(key) + " is not supported by kvq serve except as " +
                                                    neutral.dump());
  };
  for (auto [k, v] : {std::pair<const char*, json>{"n", 1}, {"presence_penalty", 0}, {"frequency_penalty", 0},
                      {"logprobs", false}, {"echo", false}, {"best_of", 1}, {"logit_bias", json::object()},
                      {"suffix", ""}}) {
    if (auto e = must(k, v)) return e;
  }
  return std::nullopt;
}

std::optional<ApiError> get_text(const json& v, const std::string& field, std::string* out) {
  if (!v.is_string()) return type_error(field, "a string");
  *out = v.get<std::string>();
  return std::nullopt;
}

}  // namespace

std::variant<CompletionParams, ApiError> parse_completion_request(const std::string& body, bool chat) {
  // nlohmann's parser also refuses invalid UTF-8 inside strings; checking first names the problem.
  if (!is_valid_utf8(body)) return bad_request("invalid_utf8", "the request body is not valid UTF-8");
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return bad_request("invalid_json", "the request body is not valid JSON");
  if (!j.is_object()) return bad_request("invalid_json", "the request body must be a JSON object");
  static const std::set<std::string> kCommon = {
      "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options", "user",
      "n", "presence_penalty", "frequency_penalty", "logprobs", "logit_bias", "id_slot", "cache_prompt",
      "ignore_eos"};
  static const std::set<std::string> kCompletion = {"prompt", "echo", "best_of", "suffix"};
  static const std::set<std::string> kChat = {"messages", "max_completion_tokens", "top_logprobs"};
  for (const auto& [key, value] : j.items()) {
    if (!kCommon.count(key) && !(chat ? kChat : kCompletion).count(key)) {
      return bad_request("unknown_parameter", "unrecognized request argument: '" + key + "'");
    }
  }
  if (auto e = check_neutral(j)) return *e;
  CompletionParams p;
  p.chat = chat;
  if (j.contains("model") && !j["model"].is_null() && !j["model"].is_string()) return type_error("model", "a string");
  if (j.contains("user") && !j["user"].is_null() && !j["user"].is_string()) return type_error("user", "a string");
  if (chat) {
    if (!j.contains("messages")) return bad_request("missing_parameter", "'messages' is required");
    const json& ms = j["messages"];
    if (!ms.is_array()) return type_error("messages", "an array");
    if (ms.empty()) return bad_request("invalid_value", "'messages' must not be empty");
    for (size_t i = 0; i < ms.size(); ++i) {
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!ms[i].is_object()) return type_error(at, "an object");
      for (const auto& [key, value] : ms[i].items()) {
        if (key != "role" && key != "content" && key != "name") {
          return bad_request("unknown_parameter", "unrecognized argument in " + at + ": '" + key + "'");
        }
      }
      ChatMessage m;
      if (!ms[i].contains("role")) return bad_request("missing_parameter", at + ".role is required");
      if (auto e = get_text(ms[i]["role"], at + ".role", &m.role)) return *e;
      if (!ms[i].contains("content")) return bad_request("missing_parameter", at + ".content is required");
      if (auto e = get_text(ms[i]["content"], at + ".content", &m.content)) return *e;
      p.messages.push_back(std::move(m));
    }
  } else {
    if (!j.contains("prompt")) return bad_request("missing_parameter", "'prompt' is required");
    json pr = j["prompt"];
    // OpenAI also takes a list of prompts; kvq serves one per request.
    if (pr.is_array() && pr.size() == 1) pr = pr[0];
    if (pr.is_array()) return bad_request("unsupported_parameter", "'prompt' must be one string (one prompt per request)");
    if (auto e = get_text(pr, "prompt", &p.prompt)) return *e;
    if (p.prompt.empty()) return bad_request("empty_prompt", "'prompt' is empty");
  }
  std::optional<int64_t> v;
  const char* max_key = chat && j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (auto e = get_int(j, max_key, 1, 1 << 30, &v)) return *e;
  if (v) p.max_tokens = int(*v);
  if (auto e = get_float(j, "temperature", 0.0, 2.0, &p.temperature)) return *e;
  if (auto e = get_float(j, "top_p", 0.0, 1.0, &p.top_p)) return *e;
  v.reset();
  if (auto e = get_int(j, "top_k", 0, 1 << 30, &v)) return *e;
  if (v) p.top_k = int(*v);
  if (j.contains("seed") && !j["seed"].is_null()) {
    const json& s = j["seed"];
    if (!s.is_number_integer()) return type_error("seed", "an integer");
    p.seed = s.is_number_unsigned() ? s.get<uint64_t>() : uint64_t(s.get<int64_t>());
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    if (s.is_string()) {
      p.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > size_t(kMaxStop)) return bad_request("invalid_value", "'stop' takes at most 4 strings");
      for (const auto& x : s) {
        if (!x.is_string()) return type_error("stop", "a string or an array of strings");
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      return type_error("stop", "a string or an array of strings");
    }
    for (const auto& x : p.stop) {
      if (x.empty()) return bad_request("invalid_value", "'stop' strings must not be empty");
    }
  }
  v.reset();
  if (auto e = get_int(j, "id_slot", -1, 1 << 20, &v)) return *e;
  if (v) p.id_slot = int(*v);
  if (auto e = get_bool(j, "cache_prompt", &p.cache_prompt)) return *e;
  if (auto e = get_bool(j, "ignore_eos", &p.ignore_eos)) return *e;
  if (auto e = get_bool(j, "stream", &p.stream)) return *e;
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const json& so = j["stream_options"];
    if (!so.is_object()) return type_error("stream_options", "an object");
    for (const auto& [key, value] : so.items()) {
      if (key != "include_usage") return bad_request("unknown_parameter", "unrecognized argument in stream_options: '" + key + "'");
      if (!value.is_boolean()) return type_error("stream_options.include_usage", "a boolean");
      p.include_usage = value.get<bool>();
    }
    if (!p.stream) return bad_request("invalid_value", "'stream_options' is only allowed with stream: true");
  }
  return p;
}

}  // namespace kvq::serve

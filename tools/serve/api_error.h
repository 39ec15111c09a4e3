// SPDX-License-Identifier: MIT
// An HTTP error as OpenAI's API returns it: a status and {"error": {"message", "type", "code"}}.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvq::serve {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";  // OpenAI's types: invalid_request_error, authentication_error, server_error
  std::string code;                            // a stable machine-readable name
  std::string message;
  int retry_after_s = 0;                       // > 0: a Retry-After header (503)
  nlohmann::json to_json() const {
    return {{"error", {{"message", message}, {"type", type}, {"code", code}}}};
  }
};

inline ApiError bad_request(std::string code, std::string message) {
  return ApiError{400, "invalid_request_error", std::move(code), std::move(message), 0};
}

}  // namespace kvq::serve

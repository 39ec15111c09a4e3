// SPDX-License-Identifier: MIT
#include "serve/slot_api.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "io/mapped_file.h"
#include "io/output_file.h"
#include "serve/api_response.h"

namespace kvq::serve {

using nlohmann::json;

namespace {

void send(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  res.set_content(dump(e.to_json()), "application/json");
}

ApiError slot_api_error(const SlotResult& r) {
  switch (r.error) {
    case SlotError::kNoSuchSlot: return bad_request("invalid_slot", r.status.message());
    case SlotError::kBusy: return ApiError{409, "invalid_request_error", "slot_busy", r.status.message(), 0};
    case SlotError::kNoRoom: return ApiError{503, "server_error", "kv_budget_busy", r.status.message(), 1};
    case SlotError::kShuttingDown: return ApiError{503, "server_error", "shutting_down", r.status.message(), 0};
    default: break;
  }
  switch (r.status.code()) {
    case StatusCode::kDataLoss: return bad_request("invalid_session", r.status.message());
    case StatusCode::kUnimplemented: return bad_request("invalid_session", r.status.message());
    case StatusCode::kInvalidArgument: return bad_request("session_mismatch", r.status.message());
    case StatusCode::kNotFound: return ApiError{404, "invalid_request_error", "file_not_found", r.status.message(), 0};
    case StatusCode::kOutOfMemory: return ApiError{503, "server_error", "kv_budget_busy", r.status.message(), 1};
    default: return ApiError{500, "server_error", "slot_failed", r.status.message(), 0};
  }
}

// {"filename": "..."}: the checked name, or the error.
std::optional<ApiError> body_filename(const std::string& body, std::string* name) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad_request("invalid_json", "the body must be a JSON object {\"filename\": \"...\"}");
  for (const auto& [key, value] : j.items()) {
    if (key != "filename") return bad_request("unknown_parameter", "unrecognized argument: '" + key + "'");
  }
  if (!j.contains("filename")) return bad_request("missing_parameter", "'filename' is required");
  if (!j["filename"].is_string()) return bad_request("invalid_type", "'filename' must be a string");
  *name = j["filename"].get<std::string>();
  return check_slot_filename(*name);
}

}  // namespace

std::optional<ApiError> check_slot_filename(const std::string& name) {
  auto bad = [&](const std::string& why) {
    return bad_request("invalid_filename", "invalid filename: " + why);
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > kMaxSlotFilename) {
    return bad("it has " + std::to_string(name.size()) + " bytes, more than " + std::to_string(kMaxSlotFilename));
  }
  for (unsigned char c : name) {
    if (c == '/' || c == '\\') return bad("it holds a path separator (a plain file name is required)");
    if (!(std::isalnum(c) && c < 0x80) && c != '.' && c != '_' && c != '-') {
      return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
  }
  if (name[0] == '.') return bad("it starts with '.'");
  if (name.find("..") != std::string::npos) return bad("it contains '..'");
  return std::nullopt;
}

void slot_action(Scheduler& sched, const std::string& dir, const httplib::Request& req, httplib::Response& res) {
  if (dir.empty()) {
    return send(res, ApiError{501, "not_supported_error", "not_supported",
                              "this server does not support slot actions: start it with --slot-save-path DIR", 0});
  }
  const std::string id_text = req.matches.size() > 1 ? std::string(req.matches[1]) : "";
  int id = -1;
  if (id_text.empty() || id_text.size() > 6 ||
      id_text.find_first_not_of("0123456789") != std::string::npos) {
    return send(res, bad_request("invalid_slot", "invalid slot id '" + id_text.substr(0, 32) + "'"));
  }
  id = std::stoi(id_text);
  const std::string action = req.get_param_value("action");
  if (action == "erase") {
    SlotResult r = sched.erase_slot(id);
    if (r.error != SlotError::kNone) return send(res, slot_api_error(r));
    res.set_content(dump({{"id_slot", id}, {"n_erased", r.n_tokens}}), "application/json");
    return;
  }
  if (action != "save" && action != "restore") {
    return send(res, bad_request("invalid_action", "invalid action '" + action.substr(0, 32) +
                                                       "': use ?action=save, restore or erase"));
  }
  std::string name;
  if (auto e = body_filename(req.body, &name)) return send(res, *e);
  const std::string path = dir + "/" + name;
  // Only regular files inside dir: a symbolic link there (to anywhere) is refused, not followed.
  struct stat st;
  const bool exists = ::lstat(path.c_str(), &st) == 0;
  if (exists && !S_ISREG(st.st_mode)) {
    return send(res, bad_request("invalid_filename", "'" + name + "' in the slot directory is not a regular file"));
  }
  if (action == "save") {
    auto out = OutputFile::prepare(path, "filename");
    if (!out.ok()) return send(res, ApiError{500, "server_error", "slot_failed", out.status().message(), 0});
    SlotResult r = sched.save_slot(id, *out);
    if (r.error != SlotError::kNone) return send(res, slot_api_error(r));
    res.set_content(dump({{"id_slot", id},
                          {"filename", name},
                          {"n_saved", r.n_tokens},
                          {"n_written", r.n_bytes},
                          {"timings", {{"save_ms", r.ms}}}}),
                    "application/json");
    return;
  }
  if (!exists) {
    return send(res, ApiError{404, "invalid_request_error", "file_not_found",
                              "no slot file '" + name + "' in the slot directory", 0});
  }
  auto mf = MappedFile::open(path);
  if (!mf.ok()) return send(res, slot_api_error(SlotResult{SlotError::kFailed, mf.status()}));
  SlotResult r = sched.restore_slot(id, (*mf)->bytes(), name);
  if (r.error != SlotError::kNone) return send(res, slot_api_error(r));
  res.set_content(dump({{"id_slot", id},
                        {"filename", name},
                        {"n_restored", r.n_tokens},
                        {"n_read", r.n_bytes},
                        {"timings", {{"restore_ms", r.ms}}}}),
                  "application/json");
}

void slot_list(const Scheduler& sched, httplib::Response& res) {
  json out = json::array();
  const int n_ctx = sched.options().n_ctx;
  for (const SlotInfo& s : sched.slots()) {
    const char* state = s.busy ? "busy" : s.locked ? "saving_or_restoring" : s.n_tokens > 0 ? "idle" : "empty";
    out.push_back({{"id", s.id},
                   {"state", state},
                   {"is_processing", s.busy},
                   {"n_ctx", n_ctx},
                   {"n_tokens", s.n_tokens},
                   {"kv_bytes", s.bytes}});
  }
  res.set_content(dump(out), "application/json");
}

}  // namespace kvq::serve

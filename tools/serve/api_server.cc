// SPDX-License-Identifier: MIT
#include "serve/api_server.h"

#include <chrono>
#include <cstring>
#include <ctime>

#include "serve/api_error.h"
#include "serve/api_request.h"
#include "serve/api_response.h"
#include "serve/metrics_text.h"
#include "serve/slot_api.h"

namespace kvq::serve {

using nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  res.set_content(dump(e.to_json()), "application/json");
}

const char* status_type(int status) {
  if (status == 401) return "authentication_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

// Compares without stopping at the first difference, so the time taken says nothing of the key.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

ApiError submit_error(const SubmitResult& r) {
  switch (r.error) {
    case SubmitError::kQueueFull:
      return ApiError{503, "server_error", "queue_full", r.status.message(), 1};
    case SubmitError::kShuttingDown:
      return ApiError{503, "server_error", "shutting_down", r.status.message(), 0};
    case SubmitError::kTooLarge:
      return bad_request("kv_budget_exceeded", r.status.message());
    default:
      return bad_request("invalid_request", r.status.message());
  }
}

}  // namespace

ApiServer::ApiServer(const LlamaModel& model, Scheduler& scheduler, ApiOptions opts)
    : model_(model), sched_(scheduler), opts_(std::move(opts)) {
  auto tmpl = model.gguf().get_string("tokenizer.chat_template");
  if (!tmpl.ok()) {
    chat_template_note_ = "the model has no chat template (tokenizer.chat_template is missing)";
  } else {
    chat_format_ = detect_chat_format(*tmpl);
    if (chat_format_ == ChatFormat::kNone) {
      chat_template_note_ = "the model's chat template (tokenizer.chat_template) is none of the formats kvq renders "
                            "(llama2, llama3, chatml, mistral)";
    }
  }
  routes();
}

Status ApiServer::bind(const std::string& host, int port) {
  if (port == 0) {
    port_ = http_.bind_to_any_port(host.c_str());
    if (port_ <= 0) return invalid_argument("cannot listen on " + host + " (any port)");
  } else {
    if (!http_.bind_to_port(host.c_str(), port)) {
      return invalid_argument("cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
    }
    port_ = port;
  }
  return ok_status();
}

void ApiServer::listen() { http_.listen_after_bind(); }

void ApiServer::routes() {
  const int threads = opts_.http_threads;
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http_.set_payload_max_length(opts_.max_body_bytes);
  http_.set_keep_alive_timeout(2);
  http_.set_read_timeout(10);
  http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opts_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string kBearer = "Bearer ";
    if (auth.compare(0, kBearer.size(), kBearer) == 0 && same_secret(auth.substr(kBearer.size()), opts_.api_key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    send_error(res, ApiError{401, "authentication_error", "invalid_api_key",
                             auth.empty() ? "no API key: send 'Authorization: Bearer KEY'" : "invalid API key", 0});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Whatever httplib answers by itself (404, 413 for a body over the limit, 400 for a bad
  // request line) gets a JSON body too.
  http_.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string code = "http_" + std::to_string(res.status), message = "HTTP error " + std::to_string(res.status);
    if (res.status == 404) code = "not_found", message = "no such endpoint: " + req.method + " " + req.path;
    if (res.status == 413) code = "payload_too_large", message = "the request body is over the server's limit";
    send_error(res, ApiError{res.status, status_type(res.status), code, message, 0});
    return httplib::Server::HandlerResponse::Handled;
  }));
  http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what += std::string(": ") + e.what();
    } catch (...) {
    }
    send_error(res, ApiError{500, "server_error", "internal_error", what, 0});
  });
  http_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json m = {{"id", opts_.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "kvq"}};
    res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
  });
  http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  http_.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, false); });
  http_.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, true); });
  http_.Get("/slots", [this](const httplib::Request&, httplib::Response& res) { slot_list(sched_, res); });
  http_.Post(R"(/slots/([^/]*))", [this](const httplib::Request& q, httplib::Response& r) {
    slot_action(sched_, opts_.slot_save_path, q, r);
  });
}

std::string ApiServer::metrics_text() const {
  return format_metrics(sched_.metrics(), sched_.options());
}

void ApiServer::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  auto parsed = parse_completion_request(req.body, chat);
  if (auto* e = std::get_if<ApiError>(&parsed)) return send_error(res, *e);
  const CompletionParams& p = std::get<CompletionParams>(parsed);
  const Tokenizer& tok = model_.tokenizer();
  SeqRequest sr;
  if (chat) {
    if (chat_format_ == ChatFormat::kNone) return send_error(res, bad_request("no_chat_template", chat_template_note_ +
                                                                              "; use /v1/completions"));
    auto text = render_chat(chat_format_, p.messages);
    if (!text.ok()) return send_error(res, bad_request("invalid_messages", text.status().message()));
    // The template's markers (<|eot_id|>, <|im_end|>) are special tokens.
    sr.prompt = tok.encode(*text, tok.add_bos(), true);
  } else {
    sr.prompt = tok.encode(p.prompt, tok.add_bos(), false);
  }
  const int n_ctx = sched_.options().n_ctx, n_prompt = int(sr.prompt.size());
  if (n_prompt >= n_ctx) {
    return send_error(res, bad_request("context_length_exceeded",
                                       "the prompt has " + std::to_string(n_prompt) + " tokens; the context holds " +
                                           std::to_string(n_ctx) + " (prompt + max_tokens)"));
  }
  if (p.max_tokens && *p.max_tokens > n_ctx - n_prompt) {
    return send_error(res, bad_request("context_length_exceeded",
                                       "max_tokens " + std::to_string(*p.max_tokens) + " + the prompt's " +
                                           std::to_string(n_prompt) + " tokens exceed the context of " +
                                           std::to_string(n_ctx) + " tokens"));
  }
  sr.max_tokens = p.max_tokens ? *p.max_tokens : std::min(opts_.default_max_tokens, n_ctx - n_prompt);
  sr.sampling.temp = p.temperature;
  sr.sampling.top_p = p.top_p;
  sr.sampling.top_k = p.top_k;
  sr.sampling.seed = p.seed ? *p.seed : next_seed_.fetch_add(0x9E3779B97F4A7C15ull);
  sr.stop = p.stop;
  sr.id_slot = p.id_slot;
  sr.cache_prompt = p.cache_prompt;
  sr.ignore_eos = p.ignore_eos;
  SubmitResult sub = sched_.submit(std::move(sr));
  if (!sub.channel) return send_error(res, submit_error(sub));

  ResponseHead head;
  head.chat = chat;
  head.id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
  head.created = int64_t(std::time(nullptr));
  head.model = opts_.model_id;
  std::shared_ptr<SeqChannel> ch = sub.channel;

  if (!p.stream) {
    std::string text;
    SeqUpdate u;
    for (;;) {
      ch->wait(&u, kPoll);
      text += u.text;
      if (u.done) break;
    }
    if (u.finish == FinishReason::kError) {
      return send_error(res, ApiError{500, "server_error", "generation_failed", u.error.message(), 0});
    }
    if (u.finish == FinishReason::kCancelled) {
      return send_error(res, ApiError{503, "server_error", "cancelled", "the server is shutting down", 0});
    }
    res.set_content(dump(completion_body(head, text, finish_reason_name(u.finish), {u.n_prompt, u.n_generated})),
                    "application/json");
    return;
  }
  // Server-sent events. A failed write means the client left: cancel, and the scheduler frees
  // the sequence's pages at its next step.
  auto first = std::make_shared<bool>(true);
  const bool include_usage = p.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [ch, head, first, include_usage](size_t, httplib::DataSink& sink) {
        SeqUpdate u;
        if (!ch->wait(&u, kPoll)) return true;  // nothing yet: httplib calls again
        auto send = [&](const json& j) {
          const std::string ev = "data: " + dump(j) + "\n\n";
          return sink.write(ev.data(), ev.size());
        };
        if ((!u.text.empty() || *first) && !send(completion_chunk(head, u.text, "", *first))) {
          ch->cancel();
          return false;
        }
        *first = false;
        if (!u.done) return true;
        if (u.finish == FinishReason::kError) {
          send(ApiError{500, "server_error", "generation_failed", u.error.message(), 0}.to_json());
        } else {
          send(completion_chunk(head, "", finish_reason_name(u.finish), false));
          if (include_usage) send(usage_chunk(head, {u.n_prompt, u.n_generated}));
        }
        static const char kDone[] = "data: [DONE]\n\n";
        sink.write(kDone, sizeof kDone - 1);
        sink.done();
        return true;
      },
      [ch](bool success) {
        if (!success) ch->cancel();  // the connection ended before the stream did
      });
}

}  // namespace kvq::serve

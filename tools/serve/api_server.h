// SPDX-License-Identifier: MIT
// The OpenAI-compatible HTTP front end of kvq serve, over cpp-httplib. Handler threads parse
// and validate a request, submit it to the engine's Scheduler (which runs on the model thread)
// and relay its channel: as one JSON body, or as server-sent events. Nothing here touches the
// model or a cache.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <httplib.h>

#include "engine/serve/chat_template.h"
#include "engine/serve/scheduler.h"
#include "model/llama.h"

namespace kvq::serve {

struct ApiOptions {
  std::string model_id;    // what /v1/models lists and responses name
  std::string api_key;     // empty: no authentication
  int default_max_tokens = 256;  // when a request gives none (clipped to the context)
  size_t max_body_bytes = 1 << 20;
  int http_threads = 64;   // handler threads (each open request holds one)
  std::string slot_save_path;  // --slot-save-path, canonical; empty: /slots actions answer 501
};

class ApiServer {
 public:
  ApiServer(const LlamaModel& model, Scheduler& scheduler, ApiOptions opts);
  // Binds host:port (port 0: any free port, see port()). Errors name the address.
  Status bind(const std::string& host, int port);
  int port() const { return port_; }
  // Serves until stop(); returns when every handler has returned.
  void listen();
  // Thread-safe; what a signal handler thread calls.
  void stop() { http_.stop(); }

 private:
  void routes();
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  std::string metrics_text() const;

  const LlamaModel& model_;
  Scheduler& sched_;
  ApiOptions opts_;
  ChatFormat chat_format_ = ChatFormat::kNone;
  std::string chat_template_note_;  // why there is no chat format, for the 400
  httplib::Server http_;
  int port_ = 0;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> next_seed_{0x6b7671};
};

}  // namespace kvq::serve

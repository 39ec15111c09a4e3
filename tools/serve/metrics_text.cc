// SPDX-License-Identifier: MIT
#include "serve/metrics_text.h"

#include <cstdio>

namespace kvq::serve {

std::string format_metrics(const SchedulerMetrics& m, const SchedulerOptions& o) {
  std::string out;
  auto add = [&](const char* name, const char* type, const char* help, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + buf + "\n";
  };
  add("kvq_requests_total", "counter", "Requests accepted (queued or running).", double(m.requests_total));
  add("kvq_requests_refused_total", "counter", "Requests the scheduler refused (invalid, too large, queue full).",
      double(m.requests_refused));
  add("kvq_requests_failed_total", "counter", "Sequences ended by an engine error.", double(m.requests_failed));
  add("kvq_requests_cancelled_total", "counter", "Sequences cancelled (client gone, shutdown).",
      double(m.requests_cancelled));
  add("kvq_prompt_tokens_total", "counter", "Prompt tokens prefilled.", double(m.prompt_tokens_total));
  add("kvq_tokens_generated_total", "counter", "Tokens generated.", double(m.generated_tokens_total));
  add("kvq_prompt_tokens_reused_total", "counter", "Prompt tokens found in a slot's cache instead of prefilled.",
      double(m.prompt_tokens_reused));
  add("kvq_slot_caches_dropped_total", "counter", "Idle slot caches dropped to make room for running sequences.",
      double(m.slot_caches_dropped));
  add("kvq_steps_total", "counter", "Batched forward steps.", double(m.steps_total));
  add("kvq_busy_seconds_total", "counter", "Seconds spent in forward steps and sampling.", m.busy_seconds);
  add("kvq_decode_tokens_per_second", "gauge",
      "Tokens generated per busy second over the steps of the last 10 seconds.", m.decode_tokens_per_s);
  add("kvq_sequences_active", "gauge", "Sequences admitted and running.", m.n_active);
  add("kvq_sequences_queued", "gauge", "Requests waiting for admission.", m.n_queued);
  add("kvq_kv_bytes_used", "gauge", "KV cache bytes allocated in the shared page pool.", double(m.kv_bytes_used));
  add("kvq_kv_bytes_cached", "gauge", "KV cache bytes held by idle slots (part of kvq_kv_bytes_used).",
      double(m.kv_bytes_cached));
  add("kvq_kv_bytes_reserved", "gauge", "KV cache bytes reserved by admitted sequences.", double(m.kv_bytes_reserved));
  add("kvq_kv_budget_bytes", "gauge", "The KV budget (--kv-budget); 0: unlimited.",
      o.kv_budget == PagePool::kUnlimited ? 0.0 : double(o.kv_budget));
  add("kvq_kv_tokens", "gauge", "Tokens held by all caches.", double(m.kv_tokens));
  add("kvq_kv_bits_per_value", "gauge", "KV bytes used * 8 over the K and V values held (0 when empty).",
      m.kv_bits_per_value);
  return out;
}

}  // namespace kvq::serve

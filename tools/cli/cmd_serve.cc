// SPDX-License-Identifier: MIT
// kvq serve: an OpenAI-compatible HTTP server (docs/SERVE.md). One thread owns the model and
// runs the engine's Scheduler; cpp-httplib's handler threads only parse, submit and relay.
// SIGINT/SIGTERM stop it cleanly: running sequences are cancelled, their pages freed.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/serve/scheduler.h"
#include "serve/api_server.h"

namespace kvq::cli {

namespace {

Status serve(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  SchedulerOptions so;
  serve::ApiOptions ao;
  std::string host = "127.0.0.1", kv_budget;
  int port = 8080, max_body_kib = 1024;
  ArgParser p("serve");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, false);
  p.add_string("-ctk,--cache-type-k", &cache_args.cache_k, "key cache type (llama-server's name for --cache-k)");
  p.add_string("-ctv,--cache-type-v", &cache_args.cache_v, "value cache type (llama-server's name for --cache-v)");
  p.add_string("--host", &host, "address to listen on (default 127.0.0.1)");
  p.add_int("--port", &port, 0, 65535, "port (default 8080; 0: any free port, printed)");
  p.add_int("-c,--ctx-size", &so.n_ctx, 0, 1 << 24,
            "context of each sequence in tokens, prompt + generated (default: the model's, at most 4096)");
  p.add_int("-np,--parallel", &so.max_seqs, 1, 4096,
            "slots: sequences decoding at once, each keeping its cache when idle (default 16)");
  std::string slot_dir;
  p.add_string("--slot-save-path", &slot_dir, "directory for POST /slots/{id}?action=save|restore files (default: off)");
  add_batch_flag(p, &so.prefill_chunk);
  p.add_string("--kv-budget", &kv_budget, "KV cache bytes for all sequences together, e.g. 4GiB (default: unlimited)");
  p.add_int("--max-queue", &so.max_queue, 0, 1 << 20, "requests waiting for admission; beyond: 503 (default 256)");
  p.add_int("-n,--n-predict", &ao.default_max_tokens, 1, 1 << 24,
            "max_tokens of a request that gives none, clipped to the context (default 256)");
  p.add_string("--api-key", &ao.api_key, "require 'Authorization: Bearer KEY' (all but /health)");
  p.add_int("--max-body-kib", &max_body_kib, 1, 1 << 20, "largest request body in KiB; beyond: 413 (default 1024)");
  p.add_int("--http-threads", &ao.http_threads, 2, 4096, "HTTP handler threads (default 64)");
  so.n_ctx = 0;
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (specs.size() != 1) return invalid_argument("kvq serve takes one --cache type");
  so.spec = specs[0];
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  if (!kv_budget.empty()) {
    KVQ_ASSIGN_OR_RETURN(so.kv_budget, parse_bytes(kv_budget, "--kv-budget"));
  }
  ao.max_body_bytes = size_t(max_body_kib) << 10;
  if (!slot_dir.empty()) {
    std::error_code ec;
    const auto dir = std::filesystem::canonical(slot_dir, ec);
    if (ec || !std::filesystem::is_directory(dir, ec)) {
      return invalid_argument("--slot-save-path " + slot_dir + ": not an existing directory");
    }
    ao.slot_save_path = dir.string();
  }
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  note_thread_count("serve", common);
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  if (so.n_ctx == 0) so.n_ctx = std::min(model->config().n_ctx_train, 4096);
  warn_beyond_training("serve", *model, so.n_ctx, "-c " + std::to_string(so.n_ctx));
  // Signals go to one thread that waits for them; every other thread (the ExecContext's
  // workers, httplib's) inherits them blocked, so the mask is set before any is created.
  // A shell starting us in the background sets SIGINT to ignored, and an ignored signal is
  // discarded even while blocked: restore the default so sigtimedwait receives it.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "serve", so.prefill_chunk);
  KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, so.spec));
  so.calib = cal.calibration();
  KVQ_ASSIGN_OR_RETURN(auto sched, Scheduler::create(*model, ctx, so));
  ao.model_id = std::filesystem::path(common.model).filename().string();

  serve::ApiServer api(*model, *sched, ao);
  KVQ_RETURN_IF_ERROR(api.bind(host, port));
  std::thread engine([&] { sched->run(); });
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    const timespec tick{0, 200 * 1000 * 1000};
    while (!done) {
      const int sig = sigtimedwait(&sigs, nullptr, &tick);
      if (sig == SIGINT || sig == SIGTERM) {
        std::fprintf(stderr, "kvq serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        sched->stop();  // cancels every sequence: waiting handlers return at once
        api.stop();
        return;
      }
    }
  });
  std::fprintf(stderr, "kvq serve: %s, %s cache, -c %d, -np %d, KV budget %s; listening on http://%s:%d\n",
               ao.model_id.c_str(), so.spec.text.c_str(), so.n_ctx, so.max_seqs,
               so.kv_budget == PagePool::kUnlimited ? "unlimited" : format_bytes(double(so.kv_budget)).c_str(),
               host.c_str(), api.port());
  std::fflush(stderr);
  api.listen();
  sched->stop();
  engine.join();
  done = true;
  waiter.join();
  std::fprintf(stderr, "kvq serve: stopped; KV pool holds %zu bytes\n", sched->pool().bytes_in_use());
  return ok_status();
}

}  // namespace

int cmd_serve(const std::vector<std::string>& argv) { return report("serve", serve(argv)); }

}  // namespace kvq::cli

// SPDX-License-Identifier: MIT
// kvq run: generate text, streaming to stdout; timings and cache memory on stderr.
#include <cstdio>

#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/prompt_cache.h"
#include "cli/common.h"
#include "engine/generate.h"
#include "engine/runtime.h"

namespace kvq::cli {

namespace {
Status run(const std::vector<std::string>& argv, bool* help) {
  CommonArgs common;
  CacheArgs cache_args;
  GenerateArgs gen;
  PromptCacheArgs pc_args;
  std::string prompt_file;
  int n_ctx = 0;
  ArgParser p("run");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, false);
  p.add_string("-p,--prompt", &gen.prompt, "prompt text");
  p.add_path("-f,--file", &prompt_file, "read the prompt from a file");
  p.add_int("-n,--n-predict", &gen.n_predict, -1, 1 << 24, "tokens to generate (default 128; -1: until EOS)");
  p.add_int("-c,--ctx-size", &n_ctx, 0, 1 << 24,
            "context size in tokens (default: the model's, at most 4096; more than the model's warns)");
  add_batch_flag(p, &gen.batch);
  p.add_float("--temp", &gen.sampling.temp, 0.0, 100.0, "temperature (default 0.8; 0: greedy)");
  p.add_int("--top-k", &gen.sampling.top_k, 0, 1 << 24, "top-k (default 40; 0: off)");
  p.add_float("--top-p", &gen.sampling.top_p, 0.0, 1.0, "top-p (default 0.95; 1: off)");
  p.add_u64("-s,--seed", &gen.sampling.seed, "sampling seed (default 42)");
  p.add_flag("--context-shift", &gen.context_shift,
             "when the context fills, drop the oldest tokens (a page of 64 at a time, after --keep) and go on; "
             "needs keys stored before RoPE (kvquant) or f16/f32 keys");
  p.add_int("--keep", &gen.n_keep, -1, 1 << 24,
            "tokens kept at the start through a context shift (default -1: the cache's sinks, at least the BOS)");
  add_prompt_cache_flags(p, &pc_args);
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    *help = true;
    return ok_status();
  }
  if (!prompt_file.empty() && (p.seen("-p") || p.seen("--prompt"))) {
    return invalid_argument("give either -p or -f, not both");
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (specs.size() != 1) return invalid_argument("kvq run takes one --cache type");
  const CacheSpec& spec = specs[0];
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(files.add_input("prompt file (-f)", prompt_file));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  KVQ_ASSIGN_OR_RETURN(PromptCache prompt_cache, PromptCache::prepare(pc_args, &files));
  note_thread_count("run", common);
  if (!prompt_file.empty()) {
    KVQ_ASSIGN_OR_RETURN(gen.prompt, read_text_file(prompt_file, "prompt file (-f)"));
  }
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  if (n_ctx == 0) n_ctx = std::min(model->config().n_ctx_train, 4096);
  // The prompt must fit before any calibration runs.
  KVQ_ASSIGN_OR_RETURN(const std::vector<int32_t> prompt, encode_prompt(*model, gen.prompt, n_ctx));
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "run", gen.batch);
  KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, spec));
  KVQ_ASSIGN_OR_RETURN(auto cache, make_cache(spec, model->kv_shape(n_ctx), cal.calibration()));
  KVQ_RETURN_IF_ERROR(check_cache_fits({cache.get()}, n_ctx, "-c " + std::to_string(n_ctx)));
  warn_beyond_training("run", *model, n_ctx, "-c " + std::to_string(n_ctx));

  auto on_piece = [](std::string_view s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  KVQ_RETURN_IF_ERROR(prompt_cache.restore(*model, *cache, prompt, &gen));
  std::vector<int32_t> tokens;
  KVQ_ASSIGN_OR_RETURN(GenerateStats st, generate(ctx, *model, *cache, gen, on_piece, &tokens));
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (st.context_full) std::fprintf(stderr, "kvq run: stopped: the context of %d tokens is full\n", n_ctx);
  if (st.n_shifts > 0) {
    std::fprintf(stderr, "kvq run: context shifted %d times (%d tokens dropped after the first %d)\n", st.n_shifts,
                 st.n_dropped, st.n_keep);
  }
  KVQ_RETURN_IF_ERROR(prompt_cache.finish(*model, *cache, tokens, st));
  const int n_cached = cache->n_tokens(0);
  std::fprintf(stderr,
               "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s); "
               "%d threads, %s kernels (%s)\n",
               st.n_prompt, st.prefill_seconds, st.n_prompt / std::max(1e-9, st.prefill_seconds),
               st.n_generated, st.decode_seconds,
               st.n_generated / std::max(1e-9, st.decode_seconds), common.n_threads,
               common.kernels.c_str(), simd_targets_label().c_str());
  // What the same tokens take in an f16 cache, allocated the same way.
  auto f16 = make_cache(parse_cache_spec("f16").value(), model->kv_shape(n_ctx)).value();
  const double used = double(cache->bytes_used()), f16_bytes = double(f16->bytes_for(n_cached));
  const double values = 2.0 * n_cached * model->config().n_layers * model->config().kv_dim();
  std::fprintf(stderr, "kv cache %s: %s for %d tokens (%.1f bytes/token, %.2f bits/value); f16: %s, %.2fx smaller\n",
               cache->name().c_str(), format_bytes(used).c_str(), n_cached, used / std::max(1, n_cached),
               8.0 * used / std::max(1.0, values), format_bytes(f16_bytes).c_str(), f16_bytes / std::max(1.0, used));
  if (!calib.description().empty()) std::fprintf(stderr, "calibration: %s\n", calib.description().c_str());
  return ok_status();
}
}  // namespace

int cmd_run(const std::vector<std::string>& argv) {
  bool help = false;
  return report("run", run(argv, &help));
}

}  // namespace kvq::cli

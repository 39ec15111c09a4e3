// SPDX-License-Identifier: MIT
// kvq bench: prefill and decode throughput (median of repeats) with a chosen cache, as a
// markdown table row, llama-bench style.
#include <algorithm>
#include <cstdio>

#include "base/printable.h"
#include "base/rng.h"
#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/runtime.h"

namespace kvq::cli {

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  int n_prompt = 128, n_gen = 128, reps = 3;
  ArgParser p("bench");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, false);
  p.add_int("-p,--n-prompt", &n_prompt, 1, 1 << 20, "prompt tokens to prefill (default 128)");
  p.add_int("-n,--n-gen", &n_gen, 0, 1 << 20, "tokens to decode after the prompt (default 128)");
  p.add_int("-r,--repetitions", &reps, 1, 1000, "repetitions; the median is reported (default 3)");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (specs.size() != 1) return invalid_argument("kvq bench takes one --cache type");
  const CacheSpec& spec = specs[0];
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  note_thread_count("bench", common);
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  const int n_ctx = n_prompt + n_gen;
  if (n_ctx > model->config().n_ctx_train) {
    warn("bench", "-p " + std::to_string(n_prompt) + " + -n " + std::to_string(n_gen) + " = " + std::to_string(n_ctx) +
                      " tokens exceeds the model's context of " + std::to_string(model->config().n_ctx_train) +
                      ": speeds there are measured on positions the model was never trained for");
  }
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "bench");
  KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, spec));
  KVQ_ASSIGN_OR_RETURN(auto cache, make_cache(spec, model->kv_shape(n_ctx), cal.calibration()));
  KVQ_RETURN_IF_ERROR(check_cache_fits(*cache, n_ctx));
  const int n_vocab = model->config().n_vocab;
  Rng rng(1234);
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (auto& t : prompt) t = int32_t(rng.below(uint64_t(n_vocab)));
  prompt[0] = model->tokenizer().bos_id();
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  ForwardWorkspace ws;
  std::vector<double> pp, tg;
  for (int r = 0; r <= reps; ++r) {  // repetition 0 warms up and is not counted
    cache->clear();
    Timer t;
    KVQ_RETURN_IF_ERROR(model->forward(ctx, prompt, *cache, ws, logits.data(), false));
    const double prefill = t.seconds();
    t.reset();
    for (int i = 0; i < n_gen; ++i) {
      const int32_t next[1] = {int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin())};
      KVQ_RETURN_IF_ERROR(model->forward(ctx, next, *cache, ws, logits.data(), false));
    }
    const double decode = t.seconds();
    if (r == 0) continue;
    pp.push_back(n_prompt / prefill);
    if (n_gen > 0) tg.push_back(n_gen / decode);
  }
  const size_t bytes = cache->bytes_used();
  std::printf("| model | cache | threads | kernels | pp%d tok/s | tg%d tok/s | cache bytes/token |\n",
              n_prompt, n_gen);
  std::printf("|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %d | %s (%s) | %.1f | %.1f | %.1f |\n", printable(common.model).c_str(),
              spec.text.c_str(), common.n_threads, common.kernels.c_str(), simd_target_name(),
              median(pp), tg.empty() ? 0.0 : median(tg), double(bytes) / cache->n_tokens(0));
  return ok_status();
}
}  // namespace

int cmd_bench(const std::vector<std::string>& argv) {
  if (!argv.empty() && argv[0] == "attention") return cmd_bench_attention({argv.begin() + 1, argv.end()});
  return report("bench", run(argv));
}

}  // namespace kvq::cli

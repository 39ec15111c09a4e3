// SPDX-License-Identifier: MIT
// kvq info: model metadata, parameter count, KV cache bytes per token and memory for -c.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

#include "base/printable.h"

#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "engine/runtime.h"
#include "cli/common.h"

namespace kvq::cli {

namespace {
Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  int n_ctx = 0;
  bool show_metadata = false;
  ArgParser p("info");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true);
  p.add_int("-c,--ctx-size", &n_ctx, 0, 1 << 24, "context size to size the cache for (default: the model's)");
  p.add_flag("--metadata", &show_metadata, "also list every GGUF metadata key");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  const ModelConfig& c = model->config();
  if (n_ctx == 0) n_ctx = c.n_ctx_train;
  std::printf("model: %s (%s%s%s)\n", printable(common.model).c_str(), printable(c.arch).c_str(),
              c.name.empty() ? "" : ", ", printable(c.name).c_str());
  std::printf("gguf: version %u, %zu tensors, %zu metadata keys\n", model->gguf().version(),
              model->gguf().tensors().size(), model->gguf().kvs().size());
  // Weights are read in place from the mapping, so the file's tensor bytes are what they cost.
  std::map<std::string, int> type_counts;
  for (const auto& t : model->gguf().tensors()) ++type_counts[ggml_type_name(t.type)];
  std::string types;
  for (const auto& [name, count] : type_counts) types += (types.empty() ? "" : ", ") + name + " x" + std::to_string(count);
  std::printf("params: %zu; weights: %s mapped in place (%s as f32); tensor types: %s\n",
              model->weights().n_params, format_bytes(double(model->weights().mapped_bytes)).c_str(),
              format_bytes(4.0 * double(model->weights().n_params)).c_str(), types.c_str());
  std::printf("n_vocab %d, n_embd %d, n_layers %d, n_heads %d, n_kv_heads %d, head_dim %d, n_ff %d\n",
              c.n_vocab, c.n_embd, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.n_ff);
  std::printf("context_length %d, rope_dim %d, rope_freq_base %g, rms_eps %g, output %s\n",
              c.n_ctx_train, c.rope_dim, double(c.rope_freq_base), double(c.rms_eps),
              model->weights().output_tied ? "tied to token_embd" : "separate");
  // Memory per cache type, from the bits accounting (quant/bits_accounting.h), which counts
  // codes, scales, zero points, outliers (expected fraction), windows and sinks. Caches with
  // fp16 windows (KIVI) cost more per value while a window fills than just after it flushed:
  // the figure shown is the peak over the last window cycle up to -c tokens, which is what a
  // run that fills the context holds (kvq ppl reports the cache after n_ctx - 1 tokens).
  const KvCacheShape shape = model->kv_shape(n_ctx);
  std::printf("kv cache up to -c %d (bits accounting; peak over the last fp16-window cycle):\n", n_ctx);
  for (const auto& spec : specs) {
    const CacheConfig config = cache_config(spec, shape);
    auto r = account_bits(config, n_ctx);
    if (!r.ok()) return r.status().with_context(spec.text);
    // Validate the spec against this model (e.g. q4_0 needs head_dim % 32 == 0).
    if (!spec.needs_calibration()) KVQ_RETURN_IF_ERROR(make_cache(spec, shape).status());
    const int cycle = std::max({config.k.residual, config.v.residual, 1});
    BitsReport peak = *r;
    for (int n = std::max(1, n_ctx - cycle); n < n_ctx; ++n) {
      auto rn = account_bits(config, n);
      if (rn.ok() && rn->bits_per_value() > peak.bits_per_value()) peak = *rn;
    }
    std::printf("  %-40s %10.1f bytes/token  %6.3f bits/value  %s", spec.text.c_str(),
                peak.total_bytes() / double(peak.n_tokens), peak.bits_per_value(),
                format_bytes(r->total_bytes()).c_str());
    if (peak.n_tokens != n_ctx) {
      std::printf("  (peak at %lld tokens; %.3f bits/value at %d, just after a window flush)",
                  (long long)peak.n_tokens, r->bits_per_value(), n_ctx);
    }
    std::printf("\n");
    if (specs.size() == 1) {
      std::string detail = r->to_string();
      std::printf("%s\n", detail.c_str());
    }
  }
  if (!cache_args.calib.empty() && cache_args.calib != "auto") {
    KVQ_ASSIGN_OR_RETURN(CalibrationFile cal, CalibrationFile::load(cache_args.calib, *model));
    std::printf("calibration: %s: %s\n", printable(cache_args.calib).c_str(), cal.describe().c_str());
  }
  std::printf("simd target: %s\n", simd_target_name());
  if (show_metadata) {
    for (const auto& kv : model->gguf().kvs()) {
      std::printf("  %s = %s\n", printable(kv.key).c_str(), gguf_value_to_string(kv.value).c_str());
    }
  }
  return ok_status();
}
}  // namespace

int cmd_info(const std::vector<std::string>& argv) { return report("info", run(argv)); }

}  // namespace kvq::cli

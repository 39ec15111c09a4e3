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
  std::string budget_text;
  ArgParser p("info");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true,
                  "KV cache type, or a comma-separated list to account side by side (default f16; docs/CACHE_SPEC.md)");
  p.add_int("-c,--ctx-size", &n_ctx, 0, 1 << 24, "context size to size the cache for (default: the model's)");
  p.add_flag("--metadata", &show_metadata, "also list every GGUF metadata key");
  p.add_string("--kv-budget", &budget_text,
               "also print the largest context each cache holds in this much memory (e.g. 20GiB)");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  uint64_t budget = 0;
  if (!budget_text.empty()) {
    KVQ_ASSIGN_OR_RETURN(budget, parse_bytes(budget_text, "--kv-budget"));
  }
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  CommandFiles files;
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  for (const auto& spec : specs) {
    if (spec.mixed_widths() && cache_args.calib.empty()) {
      return invalid_argument("'" + spec.text + "' takes each layer's width from a calibration file: pass --calib FILE "
                              "written by 'kvq calibrate --bits-budget B'");
    }
  }
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
  // What the architecture's graph does beyond LLaMA's (model/config.cc), when anything.
  std::string extra;
  auto add = [&](const std::string& s) { extra += (extra.empty() ? "" : ", ") + s; };
  if (c.rope_mode == RopeMode::kNeox) add("rope neox (halves)");
  const size_t n_freqs = model->weights().rope_freqs.size();
  if (n_freqs > 0) add("rope_freqs (" + std::to_string(n_freqs) + " factors)");
  if (!model->weights().layers.empty() && model->weights().layers[0].bq.present()) add("q/k/v biases");
  if (c.ffn_act == FfnActivation::kGelu) add("GeGLU");
  if (c.embd_scale != 1.0f) add("embedding x " + std::to_string(c.embd_scale));
  if (c.n_swa > 0) add("sliding window " + std::to_string(c.n_swa));
  if (!extra.empty()) std::printf("%s: %s\n", c.arch.c_str(), extra.c_str());
  // Memory per cache type, from the bits accounting (quant/bits_accounting.h), which counts
  // what a cache holding -c tokens allocates: codes, scales, zero points, outliers (expected
  // fraction), pages, window rings and sinks. Allocation never shrinks as tokens are added
  // (KIVI's window is a ring of fixed capacity), so this is the run's peak.
  const KvCacheShape shape = model->kv_shape(n_ctx);
  // A calibration file gives kvquant-mixed its per-layer widths (and is described below).
  std::unique_ptr<CalibrationFile> cal;
  if (!cache_args.calib.empty() && cache_args.calib != "auto") {
    KVQ_ASSIGN_OR_RETURN(CalibrationFile f, CalibrationFile::load(cache_args.calib, *model));
    cal = std::make_unique<CalibrationFile>(std::move(f));
  }
  std::printf("kv cache holding -c %d tokens (bits accounting, as allocated):\n", n_ctx);
  for (const auto& spec : specs) {
    KvActivations::ForSpec params;
    if (spec.mixed_widths() && cal) {
      auto p = cal->for_spec(spec);
      if (!p.ok()) return p.status().with_context(spec.text);
      params = std::move(*p);
    }
    const CacheConfig config = cache_config(spec, shape, params.calibration());
    auto r = account_bits(config, n_ctx);
    if (!r.ok()) return r.status().with_context(spec.text);
    // Validate the spec against this model (e.g. q4_0 needs head_dim % 32 == 0).
    if (!spec.needs_calibration()) KVQ_RETURN_IF_ERROR(make_cache(spec, shape).status());
    std::printf("  %-40s %10.1f bytes/token  %6.3f bits/value  %s", spec.text.c_str(),
                r->total_bytes() / double(n_ctx), r->bits_per_value(), format_bytes(r->total_bytes()).c_str());
    if (budget > 0) {
      // Allocation grows with the tokens held: the largest n whose cache fits, by bisection.
      int64_t lo = 0, hi = int64_t(1) << 40;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        auto rm = account_bits(config, mid);
        if (rm.ok() && rm->total_bytes() <= double(budget)) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      std::printf("  holds %lld tokens in %s", (long long)lo, format_bytes(double(budget)).c_str());
    }
    std::printf("\n");
    if (specs.size() == 1) {
      std::string detail = r->to_string();
      std::printf("%s\n", detail.c_str());
    }
  }
  if (cal) {
    std::printf("calibration: %s: %s\n", printable(cache_args.calib).c_str(), cal->describe().c_str());
    // Per-layer widths for kvquant-mixed, when the file has them (kvq calibrate --bits-budget).
    if (cal->mixed()) {
      std::printf("per-%s widths (kvquant-mixed):\n%s", cal->mixed()->per_head ? "head" : "layer",
                  cal->describe_mixed().c_str());
    }
  }
  std::printf("simd target: %s\n", simd_targets_label().c_str());
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

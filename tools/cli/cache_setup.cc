// SPDX-License-Identifier: MIT
#include "cli/cache_setup.h"

#include <algorithm>
#include <cstdio>

#include "base/printable.h"

#include "base/timer.h"
#include "cli/common.h"

namespace kvq::cli {

void add_cache_flags(ArgParser& p, CacheArgs* a, bool allow_list, const std::string& cache_help) {
  p.add_string("--cache", &a->cache,
               !cache_help.empty() ? cache_help
               : allow_list ? "KV cache type, or a comma-separated list for a quality report (default f16; docs/CACHE_SPEC.md)"
                          : "KV cache type (default f16; docs/CACHE_SPEC.md)");
  p.add_string("--cache-k", &a->cache_k, "key cache type (overrides --cache for keys)");
  p.add_string("--cache-v", &a->cache_v, "value cache type (overrides --cache for values)");
  p.add_path("--calib", &a->calib, "kvquant calibration: 'auto' (from --calib-text) or a calibration file");
  p.add_path("--calib-text", &a->calib_text, "text for --calib auto (default: shared TinyStories train text)");
  p.add_int("--calib-windows", &a->calib_windows, 1, 4096, "windows for --calib auto (default 8)");
  p.add_int("--calib-window", &a->calib_window, 0, 1 << 20, "tokens per window (default min(512, model context))");
  p.add_string("--calib-weighting", &a->calib_weighting,
               "codebook k-means weights for --calib auto: none (default), fisher or fisher-s2");
}

StatusOr<std::vector<CacheSpec>> parse_cache_args(const CacheArgs& a) {
  std::vector<CacheSpec> out;
  const auto list = split_spec_list(a.cache);
  if (!a.cache_k.empty() || !a.cache_v.empty()) {
    // One side may be a list (an ablation over key or value formats), the other is fixed.
    if (list.size() != 1) return invalid_argument("--cache-k/--cache-v cannot be combined with a --cache list");
    const auto ks = split_spec_list(a.cache_k.empty() ? a.cache : a.cache_k);
    const auto vs = split_spec_list(a.cache_v.empty() ? a.cache : a.cache_v);
    if (ks.size() > 1 && vs.size() > 1) return invalid_argument("only one of --cache-k and --cache-v may be a list");
    for (const auto& k : ks) {
      for (const auto& v : vs) {
        KVQ_ASSIGN_OR_RETURN(CacheSpec s, parse_cache_spec(k, v));
        out.push_back(std::move(s));
      }
    }
    return out;
  }
  for (const auto& item : list) {
    if (item.empty()) return invalid_argument("--cache '" + a.cache + "' has an empty entry");
    KVQ_ASSIGN_OR_RETURN(CacheSpec s, parse_cache_spec(item));
    out.push_back(std::move(s));
  }
  return out;
}

Status check_calibration_args(const CacheArgs& a, const std::vector<CacheSpec>& specs,
                              const std::string& model_path, CommandFiles* files) {
  const bool needed = std::any_of(specs.begin(), specs.end(), [](const CacheSpec& s) { return s.needs_calibration(); });
  if (!a.calib.empty() && !needed) {
    return invalid_argument("--calib is given but no cache here uses calibration (only kvquant caches do): "
                            "drop --calib or choose a kvquant cache");
  }
  if (!a.calib_text.empty() && a.calib != "auto") return invalid_argument("--calib-text is used only with --calib auto");
  if (!needed || a.calib.empty()) return ok_status();
  for (const CacheSpec& s : specs) {
    if (s.mixed_widths() && a.calib == "auto") {
      return invalid_argument("'" + s.text + "' takes each layer's width from a calibration file written by "
                              "'kvq calibrate --bits-budget B' (pass --calib FILE); --calib auto fits one width for all layers");
    }
  }
  if (a.calib != "auto") return files->add_input("calibration file (--calib)", a.calib);
  if (!a.calib_text.empty()) return files->add_input("calibration text (--calib-text)", a.calib_text);
  KVQ_ASSIGN_OR_RETURN(std::string text, find_shared_text(model_path, kCalibrationText, "--calib-text"));
  return files->add_input("default calibration text", text);
}

StatusOr<KvActivations::ForSpec> CalibrationContext::for_spec(ExecContext& ctx, const LlamaModel& model,
                                                             const CacheSpec& spec) {
  if (!spec.needs_calibration()) return KvActivations::ForSpec{};
  if (args_.calib.empty()) {
    return invalid_argument("'" + spec.text + "' needs calibration (per-channel key thresholds and "
                            "codebooks): pass --calib auto or --calib FILE");
  }
  if (args_.calib != "auto") {
    if (!file_) {
      KVQ_ASSIGN_OR_RETURN(CalibrationFile f, CalibrationFile::load(args_.calib, model));
      file_ = std::make_unique<CalibrationFile>(std::move(f));
      description_ = printable(args_.calib) + ": " + file_->describe();
    }
    return file_->for_spec(spec);
  }
  const int window = args_.calib_window > 0 ? args_.calib_window : std::min(512, model.config().n_ctx_train);
  // Checked before the (long) capture: sinks are excluded from the statistics.
  if (spec.k.kind == TensorKind::kKvquant) KVQ_RETURN_IF_ERROR(check_calibration_sinks(spec.k.kvquant.sinks, window));
  if (spec.v.kind == TensorKind::kKvquant) KVQ_RETURN_IF_ERROR(check_calibration_sinks(spec.v.kvquant.sinks, window));
  if (!acts_) {
    std::string text = args_.calib_text;
    if (text.empty()) {
      KVQ_ASSIGN_OR_RETURN(text, find_shared_text(model_path_, kCalibrationText, "--calib-text"));
    }
    KVQ_ASSIGN_OR_RETURN(std::string body, read_text_file(text, "calibration text"));
    const auto tokens = model.tokenizer().encode(body, true, true);
    KVQ_ASSIGN_OR_RETURN(weighting_, parse_weighting(args_.calib_weighting));
    warn_beyond_training(command_, model, window, "--calib-window " + std::to_string(window));
    CalibrationArgs ca;
    ca.fisher = weighting_ != CodebookWeighting::kNone;
    ca.n_windows = args_.calib_windows;
    ca.window = window;
    ca.batch = batch_;
    Timer timer;
    std::fprintf(stderr, "calibrating on %s: %d windows of %d tokens\n", printable(text).c_str(), ca.n_windows, ca.window);
    KVQ_ASSIGN_OR_RETURN(KvActivations acts,
                         KvActivations::capture(ctx, model, tokens, ca, [&](int d, int t) {
                           show_progress("calibration windows", d, t, timer.seconds());
                         }));
    acts_ = std::make_unique<KvActivations>(std::move(acts));
    description_ = std::string("auto (k-means weights: ") + weighting_name(weighting_) + "): " + printable(text) + ", " + std::to_string(ca.n_windows) + " x " +
                   std::to_string(ca.window) + " tokens, seed " + std::to_string(ca.seed);
  }
  return acts_->for_spec(spec, weighting_);
}

}  // namespace kvq::cli

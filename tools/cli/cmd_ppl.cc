// SPDX-License-Identifier: MIT
// kvq ppl: perplexity of a text file with one cache, or a quality report over several caches
// (PPL, delta vs f16, KL divergence, top-1 agreement, actual bits per value).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/printable.h"

#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/plot.h"
#include "engine/perplexity.h"

namespace kvq::cli {

namespace {

struct Row {
  std::string cache;
  PplResult r;
  double bits = 0, bytes_per_token = 0;
};

// KL columns carry their standard errors; "dKL vs" is each row's KL minus the first compared
// row's, with the paired standard error over the same tokens (far tighter than either KL's own).
void print_table(const std::vector<Row>& rows, const char* mode) {
  const Row* ref = nullptr;
  for (const auto& w : rows) {
    if (w.r.has_kl) {
      ref = &w;
      break;
    }
  }
  std::printf("\n| cache | mode | bits/value | bytes/token | PPL | dPPL vs f16 (± paired s.e.) | dPPL %% | KL mean ± s.e. | "
              "dKL vs %s (± paired s.e.) | KL p99 | top-1 |\n",
              ref ? ref->cache.c_str() : "-");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& w : rows) {
    if (w.r.has_kl) {
      std::string dkl = &w == ref ? "(ref)" : "-";
      if (&w != ref) {
        const auto d = paired_kl_difference(w.r, ref->r);
        if (d.ok()) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "%+.5f ± %.5f", d->mean, d->std_error);
          dkl = buf;
        }
      }
      std::printf("| %s | %s | %.3f | %.1f | %.4f | %+.4f ± %.4f | %+.2f%% | %.5f ± %.5f | %s | %.5f | %.2f%% |\n",
                  w.cache.c_str(), mode, w.bits, w.bytes_per_token, w.r.ppl, w.r.delta_ppl,
                  w.r.delta_ppl_stderr, 100.0 * w.r.delta_ppl / w.r.base_ppl, w.r.kl_mean, w.r.kl_stderr,
                  dkl.c_str(), w.r.kl_p99, 100.0 * w.r.top1_agreement);
    } else {
      std::printf("| %s | %s | %.3f | %.1f | %.4f | (base) | | | | | |\n", w.cache.c_str(), mode, w.bits,
                  w.bytes_per_token, w.r.ppl);
    }
  }
}

// The results as JSON (nlohmann-json: strings escaped, numbers finite, no size limit). Metrics
// a row does not have (a base run's KL) are null.
Status write_json(OutputFile& out, const std::vector<Row>& rows, nlohmann::json header, bool token_kl) {
  std::string text;
  try {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& w : rows) {
      nlohmann::json r = {{"cache", w.cache},
                          {"bits_per_value", w.bits},
                          {"bytes_per_token", w.bytes_per_token},
                          {"ppl", w.r.ppl},
                          {"ppl_stderr", w.r.ppl_stderr},
                          {"seconds", w.r.seconds}};
      for (const char* k : {"delta_ppl", "delta_ppl_stderr", "kl_mean", "kl_stderr", "kl_p99", "top1_agreement"}) {
        r[k] = nullptr;
      }
      if (w.r.has_kl) {
        r["delta_ppl"] = w.r.delta_ppl;
        r["delta_ppl_stderr"] = w.r.delta_ppl_stderr;
        r["kl_mean"] = w.r.kl_mean;
        r["kl_stderr"] = w.r.kl_stderr;
        // Per-token KL (float precision is plenty for differences of means) for paired
        // comparisons across runs (`kvq frontier`); --token-kl only, it is 10-12 bytes a token.
        if (token_kl) r["token_kl"] = std::vector<float>(w.r.token_kl.begin(), w.r.token_kl.end());
        r["kl_p99"] = w.r.kl_p99;
        r["top1_agreement"] = w.r.top1_agreement;
      }
      results.push_back(std::move(r));
    }
    header["results"] = std::move(results);
    // Bytes that are not UTF-8 (a path) become U+FFFD instead of an exception.
    text = header.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  } catch (const std::exception& e) {
    return internal_error(std::string("--json: ") + e.what());
  }
  return out.write(text);
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  PplArgs args;
  std::string text_file, protocol = "llamacpp", mode = "decode", json, plot;
  ArgParser p("ppl");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true);
  p.add_path("-f,--file", &text_file, "text file to score (required)");
  p.add_int("-c,--ctx-size", &args.n_ctx, 4, 1 << 24, "tokens per chunk (default 512)");
  add_batch_flag(p, &args.batch);
  p.add_int("--chunks", &args.n_chunks, -1, 1 << 30, "number of chunks (default: all)");
  p.add_string("--protocol", &protocol, "llamacpp (default; = llama-perplexity) or full (KVQuant paper)");
  p.add_string("--mode", &mode, "decode (default: as deployed, token by token where it matters) or simulated");
  std::string save_logits, kl_base;
  p.add_path("--save-logits", &save_logits, "save scored log-prob rows to FILE (one cache)");
  p.add_path("--kl-base", &kl_base, "report KL divergence, top-1 agreement and dPPL against FILE (same run settings)");
  p.add_path("--json", &json, "also write the results as JSON to FILE");
  bool token_kl = false;
  p.add_flag("--token-kl", &token_kl, "with --json: include every scored token's KL (for paired comparisons across runs: kvq frontier)");
  p.add_path("--plot", &plot, "draw dPPL against bits per value to FILE.png (gnuplot)");
  KVQ_RETURN_IF_ERROR(p.parse(argv));
  if (p.help_requested()) {
    std::fputs(p.usage().c_str(), stdout);
    return ok_status();
  }
  if (text_file.empty()) return invalid_argument("no text given: pass -f FILE");
  if (protocol == "llamacpp") {
    args.protocol = PplProtocol::kLlamaCpp;
  } else if (protocol == "full") {
    args.protocol = PplProtocol::kFull;
  } else {
    return invalid_argument("--protocol must be 'llamacpp' or 'full', got '" + protocol + "'");
  }
  if (mode == "decode") {
    args.mode = PplMode::kDecode;
  } else if (mode == "simulated") {
    args.mode = PplMode::kSimulated;
  } else {
    return invalid_argument("--mode must be 'decode' or 'simulated', got '" + mode + "'");
  }
  if (args.n_chunks == 0 || args.n_chunks < -1) {
    return invalid_argument("--chunks must be at least 1 (or -1 for all), got " + std::to_string(args.n_chunks));
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  const bool report = specs.size() > 1;
  if (report && !save_logits.empty()) return invalid_argument("--save-logits takes a single --cache");
  if (report && !kl_base.empty()) {
    return invalid_argument("--kl-base takes a single --cache (a report compares every cache against f16)");
  }
  // Every file is checked before any work: inputs are regular files, outputs can be written
  // and are none of the inputs.
  CommandFiles files;
  if (common.model.empty()) return invalid_argument("no model given: pass -m FILE.gguf");
  KVQ_RETURN_IF_ERROR(files.add_input("model (-m)", common.model));
  KVQ_RETURN_IF_ERROR(files.add_input("text file (-f)", text_file));
  KVQ_RETURN_IF_ERROR(files.add_input("log-prob file (--kl-base)", kl_base));
  KVQ_RETURN_IF_ERROR(check_calibration_args(cache_args, specs, common.model, &files));
  std::optional<OutputFile> logits_out, json_out, plot_out;
  if (!save_logits.empty()) {
    KVQ_ASSIGN_OR_RETURN(logits_out, files.add_output("--save-logits", save_logits));
  }
  if (!json.empty()) {
    KVQ_ASSIGN_OR_RETURN(json_out, files.add_output("--json", json));
  }
  if (!plot.empty()) {
    KVQ_RETURN_IF_ERROR(check_gnuplot());
    KVQ_ASSIGN_OR_RETURN(plot_out, files.add_output("--plot", plot));
  }
  note_thread_count("ppl", common);
  KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(text_file, "text file (-f)"));
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  for (const auto& spec : specs) {
    // Validates each spec against this model (e.g. q4_0 with head_dim 8) before any work.
    CacheSpec probe_spec = spec;
    if (probe_spec.k.kind == TensorKind::kKvquant) probe_spec.k = parse_tensor_spec("f16").value();
    if (probe_spec.v.kind == TensorKind::kKvquant) probe_spec.v = parse_tensor_spec("f16").value();
    KVQ_ASSIGN_OR_RETURN(auto probe, make_cache(probe_spec, model->kv_shape(args.n_ctx)));
    KVQ_RETURN_IF_ERROR(check_cache_fits({probe.get()}, args.n_ctx, "-c " + std::to_string(args.n_ctx)));
  }
  const auto& tok = model->tokenizer();
  const std::vector<int32_t> tokens = tok.encode(text, tok.add_bos(), true);
  if (int64_t(tokens.size()) < args.n_ctx) {
    return invalid_argument(printable(text_file) + " has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one chunk of -c " + std::to_string(args.n_ctx));
  }
  warn_beyond_training("ppl", *model, args.n_ctx, "-c " + std::to_string(args.n_ctx));
  // A --kl-base from another run (model, text, -c, chunks, protocol) is refused now, not after it.
  KVQ_ASSIGN_OR_RETURN(const LogprobFile header, perplexity_run_header(*model, tokens, args));
  LogprobFile base_file;
  if (!kl_base.empty()) {
    auto b = read_logprob_file(kl_base);
    if (!b.ok()) return b.status().with_context("--kl-base");
    base_file = std::move(*b);
    KVQ_RETURN_IF_ERROR(check_same_run(base_file, header, kl_base));
    args.base = &base_file;
    args.base_name = kl_base;
  }
  if (logits_out) args.save_logits = &*logits_out;
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model, "ppl", args.batch);
  const KvCacheShape shape = model->kv_shape(args.n_ctx);
  const double values_per_token = 2.0 * shape.n_layers * double(shape.row_values());

  // A report compares every cache with f16 run on the same tokens.
  LogprobFile base_rows;
  std::vector<Row> rows;
  if (report) {
    auto is_f16 = [](const CacheSpec& s) { return s.text == "f16" || s.text == "K=f16,V=f16"; };
    if (std::none_of(specs.begin(), specs.end(), is_f16)) specs.insert(specs.begin(), parse_cache_spec("f16").value());
    std::stable_partition(specs.begin(), specs.end(), is_f16);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const CacheSpec& spec = specs[i];
    KVQ_ASSIGN_OR_RETURN(auto cal, calib.for_spec(ctx, *model, spec));
    PplArgs a = args;
    a.calibration = cal.calibration();
    if (report) {
      if (i == 0) a.rows_out = &base_rows; else a.base = &base_rows;
      a.base_name = "the f16 run";
    }
    Timer timer;
    a.progress = [&](int done, int total) {
      if (done == 0) {
        std::fprintf(stderr, "kvq ppl: %zu tokens, %d chunks of -c %d, protocol %s, mode %s, cache %s\n",
                     tokens.size(), total, args.n_ctx, protocol_name(args.protocol), mode_name(args.mode),
                     spec.text.c_str());
        return;
      }
      show_progress("chunks", done, total, timer.seconds());
    };
    KVQ_ASSIGN_OR_RETURN(PplResult r, run_perplexity(ctx, *model, spec, tokens, a));
    Row w;
    w.cache = spec.text;
    w.r = r;
    w.bytes_per_token = double(r.cache_bytes) / std::max(1, r.cache_tokens);
    w.bits = 8.0 * w.bytes_per_token / values_per_token;
    rows.push_back(w);
  }
  std::printf("model: %s\ntext: %s\nprotocol: %s, -c %d, %d chunks, %lld scored tokens, mode %s\n",
              printable(common.model).c_str(), printable(text_file).c_str(), protocol_name(args.protocol), args.n_ctx,
              rows[0].r.n_chunks, (long long)rows[0].r.n_scored, mode_name(args.mode));
  if (!calib.description().empty()) std::printf("calibration: %s\n", calib.description().c_str());
  if (!report) {
    const Row& w = rows[0];
    std::printf("cache %s: %.3f bits/value, %.1f bytes/token (allocated at %d tokens)\n", w.cache.c_str(), w.bits,
                w.bytes_per_token, w.r.cache_tokens);
    std::printf("PPL = %.4f +/- %.5f\n", w.r.ppl, w.r.ppl_stderr);
    if (w.r.has_kl) {
      std::printf("vs %s: base PPL %.4f, dPPL %+.4f ± %.4f, KL mean %.6f, KL p99 %.6f, top-1 agreement %.2f%%\n",
                  printable(kl_base).c_str(), w.r.base_ppl, w.r.delta_ppl, w.r.delta_ppl_stderr, w.r.kl_mean, w.r.kl_p99,
                  100.0 * w.r.top1_agreement);
    }
  } else {
    print_table(rows, mode_name(args.mode));
  }
  if (json_out) {
    const nlohmann::json header = {{"model", common.model},
                                   {"text", text_file},
                                   {"protocol", protocol_name(args.protocol)},
                                   {"mode", mode_name(args.mode)},
                                   {"n_ctx", args.n_ctx},
                                   {"chunks", rows[0].r.n_chunks},
                                   {"scored_tokens", rows[0].r.n_scored},
                                   {"calibration", calib.description()}};
    KVQ_RETURN_IF_ERROR(write_json(*json_out, rows, header, token_kl));
  }
  if (plot_out) {
    std::vector<PlotPoint> points;
    for (const auto& w : rows) {
      if (w.r.has_kl) points.push_back({w.bits, w.r.delta_ppl, w.cache});
    }
    const std::string title = std::filesystem::path(common.model).filename().string() + ": dPPL vs bits/value (" +
                              mode_name(args.mode) + ")";
    KVQ_RETURN_IF_ERROR(draw_plot(*plot_out, {{"kvq", points}}, title,
                                  "bits per value (actual, incl. scales, outliers, windows, sinks)", "PPL - PPL(f16)"));
  }
  return ok_status();
}
}  // namespace

int cmd_ppl(const std::vector<std::string>& argv) { return report("ppl", run(argv)); }

}  // namespace kvq::cli

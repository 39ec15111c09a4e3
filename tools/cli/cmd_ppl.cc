// SPDX-License-Identifier: MIT
// kvq ppl: perplexity of a text file with one cache, or a quality report over several caches
// (PPL, delta vs f16, KL divergence, top-1 agreement, actual bits per value).
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "base/timer.h"
#include "cli/cache_setup.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "engine/perplexity.h"

namespace kvq::cli {

namespace {

struct Row {
  std::string cache;
  PplResult r;
  double bits = 0, bytes_per_token = 0;
};

void print_table(const std::vector<Row>& rows, const char* mode) {
  std::printf("\n| cache | mode | bits/value | bytes/token | PPL | dPPL vs f16 (± paired s.e.) | dPPL %% | KL mean | KL p99 | top-1 |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& w : rows) {
    if (w.r.has_kl) {
      std::printf("| %s | %s | %.3f | %.1f | %.4f | %+.4f ± %.4f | %+.2f%% | %.5f | %.5f | %.2f%% |\n",
                  w.cache.c_str(), mode, w.bits, w.bytes_per_token, w.r.ppl, w.r.delta_ppl,
                  w.r.delta_ppl_stderr, 100.0 * w.r.delta_ppl / w.r.base_ppl,
                  w.r.kl_mean, w.r.kl_p99, 100.0 * w.r.top1_agreement);
    } else {
      std::printf("| %s | %s | %.3f | %.1f | %.4f | (base) | | | | |\n", w.cache.c_str(), mode, w.bits,
                  w.bytes_per_token, w.r.ppl);
    }
  }
}

Status write_json(const std::string& path, const std::vector<Row>& rows, const std::string& header) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return invalid_argument("cannot write " + tmp);
    f << "{" << header << ",\n \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& w = rows[i];
      char buf[768];
      std::snprintf(buf, sizeof buf,
                    "  {\"cache\": \"%s\", \"bits_per_value\": %.4f, \"bytes_per_token\": %.2f, \"ppl\": %.6f, "
                    "\"ppl_stderr\": %.6f, \"delta_ppl\": %.6f, \"delta_ppl_stderr\": %.6f, \"kl_mean\": %.7f, \"kl_p99\": %.7f, "
                    "\"top1_agreement\": %.6f, \"seconds\": %.2f}%s\n",
                    w.cache.c_str(), w.bits, w.bytes_per_token, w.r.ppl, w.r.ppl_stderr,
                    w.r.has_kl ? w.r.delta_ppl : 0.0, w.r.delta_ppl_stderr, w.r.kl_mean, w.r.kl_p99,
                    w.r.has_kl ? w.r.top1_agreement : 1.0, w.r.seconds, i + 1 < rows.size() ? "," : "");
      f << buf;
    }
    f << " ]\n}\n";
    if (!f) return data_loss("writing " + path + " failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return data_loss("cannot write " + path);
  return ok_status();
}

// dPPL against bits per value, one labelled point per cache, drawn by gnuplot.
Status write_plot(const std::string& path, const std::vector<Row>& rows, const std::string& title) {
  const std::string dat = path + ".dat.tmp", gp = path + ".gp.tmp", tmp_png = path + ".tmp";
  {
    std::ofstream d(dat);
    for (const auto& w : rows) {
      if (w.r.has_kl) d << w.bits << " " << w.r.delta_ppl << " \"" << w.cache << "\"\n";
    }
    std::ofstream g(gp);
    g << "set terminal pngcairo size 1000,650 noenhanced\nset output '" << tmp_png << "'\n"
      << "set title '" << title << "'\nset xlabel 'bits per value (actual, incl. scales, outliers, windows, sinks)'\n"
      << "set ylabel 'PPL - PPL(f16)'\nset logscale y\nset grid\nunset key\n"
      << "plot '" << dat << "' using 1:($2>1e-4?$2:1e-4) with points pt 7 ps 1.5, '' using 1:($2>1e-4?$2:1e-4):3 "
      << "with labels offset 0,1 font ',8'\n";
  }
  const std::string cmd = "gnuplot '" + gp + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::remove(dat.c_str());
  std::remove(gp.c_str());
  if (rc != 0) {
    std::remove(tmp_png.c_str());
    return unimplemented("--plot needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox); it failed");
  }
  if (std::rename(tmp_png.c_str(), path.c_str()) != 0) return data_loss("cannot write " + path);
  return ok_status();
}

Status run(const std::vector<std::string>& argv) {
  CommonArgs common;
  CacheArgs cache_args;
  PplArgs args;
  std::string text_file, protocol = "llamacpp", mode = "decode", json, plot;
  ArgParser p("ppl");
  add_common_flags(p, &common);
  add_cache_flags(p, &cache_args, true);
  p.add_string("-f,--file", &text_file, "text file to score (required)");
  p.add_int("-c,--ctx-size", &args.n_ctx, 4, 1 << 24, "tokens per chunk (default 512)");
  p.add_int("--chunks", &args.n_chunks, -1, 1 << 30, "number of chunks (default: all)");
  p.add_string("--protocol", &protocol, "llamacpp (default; = llama-perplexity) or full (KVQuant paper)");
  p.add_string("--mode", &mode, "decode (default: as deployed, token by token where it matters) or simulated");
  p.add_string("--save-logits", &args.save_logits, "save scored log-prob rows to FILE (one cache)");
  p.add_string("--kl-base", &args.kl_base, "report KL divergence, top-1 agreement and dPPL against FILE");
  p.add_string("--json", &json, "also write the results as JSON to FILE");
  p.add_string("--plot", &plot, "draw dPPL against bits per value to FILE.png (gnuplot)");
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
  if (!args.save_logits.empty() && args.save_logits == args.kl_base) {
    return invalid_argument("--save-logits and --kl-base name the same file");
  }
  KVQ_ASSIGN_OR_RETURN(KernelPath path, parse_kernel_path(common.kernels));
  KVQ_ASSIGN_OR_RETURN(std::vector<CacheSpec> specs, parse_cache_args(cache_args));
  const bool report = specs.size() > 1;
  if (report && !args.save_logits.empty()) return invalid_argument("--save-logits takes a single --cache");
  if (report && !args.kl_base.empty()) {
    return invalid_argument("--kl-base takes a single --cache (a report compares every cache against f16)");
  }
  KVQ_ASSIGN_OR_RETURN(std::string text, read_text_file(text_file));
  KVQ_ASSIGN_OR_RETURN(auto model, load_model(common));
  for (const auto& spec : specs) {
    // Validates each spec against this model (e.g. q4_0 with head_dim 8) before any work.
    CacheSpec probe_spec = spec;
    if (probe_spec.k.kind == TensorKind::kKvquant) probe_spec.k = parse_tensor_spec("f16").value();
    if (probe_spec.v.kind == TensorKind::kKvquant) probe_spec.v = parse_tensor_spec("f16").value();
    KVQ_ASSIGN_OR_RETURN(auto probe, make_cache(probe_spec, model->kv_shape(args.n_ctx)));
    KVQ_RETURN_IF_ERROR(check_cache_fits(*probe, args.n_ctx));
  }
  const auto& tok = model->tokenizer();
  const std::vector<int32_t> tokens = tok.encode(text, tok.add_bos(), true);
  if (int64_t(tokens.size()) < args.n_ctx) {
    return invalid_argument(text_file + " has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one chunk of -c " + std::to_string(args.n_ctx));
  }
  ExecContext ctx(common.n_threads, path);
  CalibrationContext calib(cache_args, common.model);
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
              common.model.c_str(), text_file.c_str(), protocol_name(args.protocol), args.n_ctx,
              rows[0].r.n_chunks, (long long)rows[0].r.n_scored, mode_name(args.mode));
  if (!calib.description().empty()) std::printf("calibration: %s\n", calib.description().c_str());
  if (!report) {
    const Row& w = rows[0];
    std::printf("cache %s: %.3f bits/value, %.1f bytes/token (allocated at %d tokens)\n", w.cache.c_str(), w.bits,
                w.bytes_per_token, w.r.cache_tokens);
    std::printf("PPL = %.4f +/- %.5f\n", w.r.ppl, w.r.ppl_stderr);
    if (w.r.has_kl) {
      std::printf("vs %s: base PPL %.4f, dPPL %+.4f ± %.4f, KL mean %.6f, KL p99 %.6f, top-1 agreement %.2f%%\n",
                  args.kl_base.c_str(), w.r.base_ppl, w.r.delta_ppl, w.r.delta_ppl_stderr, w.r.kl_mean, w.r.kl_p99,
                  100.0 * w.r.top1_agreement);
    }
  } else {
    print_table(rows, mode_name(args.mode));
  }
  char header[1024];
  std::snprintf(header, sizeof header,
                "\n \"model\": \"%s\", \"text\": \"%s\", \"protocol\": \"%s\", \"mode\": \"%s\", \"n_ctx\": %d, "
                "\"chunks\": %d, \"scored_tokens\": %lld, \"calibration\": \"%s\"",
                common.model.c_str(), text_file.c_str(), protocol_name(args.protocol), mode_name(args.mode),
                args.n_ctx, rows[0].r.n_chunks, (long long)rows[0].r.n_scored, calib.description().c_str());
  if (!json.empty()) KVQ_RETURN_IF_ERROR(write_json(json, rows, header));
  if (!plot.empty()) {
    KVQ_RETURN_IF_ERROR(write_plot(plot, rows, std::filesystem::path(common.model).filename().string() +
                                                    ": dPPL vs bits/value (" + mode_name(args.mode) + ")"));
  }
  return ok_status();
}
}  // namespace

int cmd_ppl(const std::vector<std::string>& argv) { return report("ppl", run(argv)); }

}  // namespace kvq::cli
